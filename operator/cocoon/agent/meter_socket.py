"""The agent's node-local Unix socket: evidence for a meter's own keys, never a key.

Under node isolation the whole node VM is the TEE, and the agent is what can reach the TEE's
report interface (configfs-tsm, NVML). Meters ask it for CPU and GPU evidence made for a
report_data of their choosing (`SHA-512(domain || nonce || digest of the meter's in-memory
keys)`). The socket hands out evidence only: it holds no key a meter could use, and it signs
nothing. Only pool pods mount the socket's directory (the chart's admission policy and the pool
renderer); the socket is mode 0660 to the meter's group.

Route: `POST /v1/evidence` with `{"reportData": "<128 hex chars>"}` → the node-evidence wire
form. Evidence is expensive on hardware (a TDX quote takes ~50 ms), so requests are serialized
and bounded by a token bucket; a refused request gets 429 and retries.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from cocoon.agent.sources import BoundSource

log = logging.getLogger("cocoon.agent")

EVIDENCE_PATH = "/v1/evidence"
REPORT_DATA_BYTES = 64
MAX_BODY = 1024


class TokenBucket:
    """`rate` tokens per second up to `burst`; `take` says whether one was available."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


def _error(status: int, reason: str, message: str) -> web.Response:
    return web.json_response({"error": {"reason": reason, "message": message}}, status=status)


def app(source: BoundSource, *, rate: float = 20.0, burst: int = 40) -> web.Application:
    bucket = TokenBucket(rate, burst)
    lock = asyncio.Lock()

    async def evidence(request: web.Request) -> web.Response:
        if not bucket.take():
            return _error(429, "RateLimited", "too many evidence requests; retry in a second")
        try:
            body = json.loads(await request.read())
            report_data = bytes.fromhex(body["reportData"])
        except (ValueError, KeyError, TypeError):
            return _error(400, "BadRequest", 'send {"reportData": "<128 hex characters>"}')
        if len(report_data) != REPORT_DATA_BYTES:
            return _error(400, "BadRequest", f"reportData must be {REPORT_DATA_BYTES} bytes")
        async with lock:
            try:
                bound = await asyncio.to_thread(source, report_data)
            except Exception as exc:  # the collector's failure is the node's, not the caller's
                log.warning("meter evidence failed", extra={"error": type(exc).__name__})
                return _error(503, "EvidenceUnavailable", "the node could not produce evidence")
        return web.json_response(bound.to_dict())

    application = web.Application(client_max_size=MAX_BODY)
    application.router.add_post(EVIDENCE_PATH, evidence)
    return application


def _clear(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_socket():
        path.unlink()


def _restrict(path: Path, group: int | None) -> None:
    if group is not None:
        os.chown(path, -1, group)
    path.chmod(0o660 if group is not None else 0o600)


async def serve(source: BoundSource, path: Path, group: int | None = None) -> web.AppRunner:
    """Listen on `path` (replacing a stale socket); readable and writable by `group`."""
    _clear(path)
    runner = web.AppRunner(app(source), access_log=None)
    await runner.setup()
    await web.UnixSite(runner, str(path)).start()
    _restrict(path, group)
    log.info("meter evidence socket listening", extra={"fields": {"path": str(path)}})
    return runner
