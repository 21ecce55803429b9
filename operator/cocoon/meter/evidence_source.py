"""Where a meter gets evidence for its own keys: the node agent's socket, or its own pod VM.

Node isolation: the node VM is the TEE and the agent owns the report interface, so the meter
asks it over the node-local Unix socket. Pod isolation (`runtimeClassName`, e.g. Kata
confidential containers): the pod is its own TEE and the meter reads configfs-tsm itself.
Either way the result is evidence for the report_data the meter chose; no key crosses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from cocoon.agent.meter_socket import EVIDENCE_PATH
from cocoon.agent.sources import BoundSource
from cocoon.attestation.evidence import NodeEvidence
from cocoon.attestation.verdict import Rejected

AsyncBoundSource = Callable[[bytes], Awaitable[NodeEvidence]]
_TIMEOUT = aiohttp.ClientTimeout(total=30)


class EvidenceUnavailable(RuntimeError):
    """The agent or the TEE interface did not give evidence; the meter cannot prove itself."""


def agent_socket(path: Path, attempts: int = 5) -> AsyncBoundSource:
    async def collect(report_data: bytes) -> NodeEvidence:
        connector = aiohttp.UnixConnector(path=str(path))
        async with aiohttp.ClientSession(connector=connector, timeout=_TIMEOUT) as session:
            for attempt in range(attempts):
                try:
                    async with session.post(
                        f"http://agent{EVIDENCE_PATH}", json={"reportData": report_data.hex()}
                    ) as response:
                        if response.status == 429:
                            await asyncio.sleep(0.5 * (attempt + 1))
                            continue
                        body = await response.json(content_type=None)
                        if response.status != 200:
                            raise EvidenceUnavailable(f"agent answered {response.status}: {body}")
                        return NodeEvidence.from_dict(body)
                except (aiohttp.ClientError, OSError) as exc:
                    raise EvidenceUnavailable(
                        f"node agent socket {path} unreachable ({type(exc).__name__}): is the "
                        "cocoon agent running on this node and its socket mounted?"
                    ) from None
                except Rejected as exc:
                    raise EvidenceUnavailable(str(exc)) from None
        raise EvidenceUnavailable("the node agent kept refusing evidence requests (429)")

    return collect


def in_process(source: BoundSource) -> AsyncBoundSource:
    """configfs-tsm inside a pod VM (or any blocking source), off the event loop."""

    async def collect(report_data: bytes) -> NodeEvidence:
        try:
            return await asyncio.to_thread(source, report_data)
        except Exception as exc:
            raise EvidenceUnavailable(f"{type(exc).__name__}: {exc}") from None

    return collect
