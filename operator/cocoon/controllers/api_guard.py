"""Admission to the operator's API, before any handler runs: a token bucket per source address
and a body size per route.

Both are checked on the request line and headers alone, so a flood or an oversized body costs a
dictionary lookup: 429 (with Retry-After) and 413 are answered without reading the body, parsing
it or touching the Kubernetes API. A body sent without a Content-Length is cut off at the same
limit while it is read. Refusals are counted in `cocoon_operator_api_refusals_total{reason}`,
whose reasons are the fixed set in `Refusal`.

Sources are pod IP addresses (in-cluster traffic to a ClusterIP Service keeps them): each agent
and each meter pod has its own bucket, so one noisy or hostile pod cannot starve the others.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import Counter

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
KiB = 1024
MiB = 1024 * KiB


class Refusal(StrEnum):
    RATE_LIMITED = "rate_limited"
    TOO_LARGE = "too_large"
    NOT_READY = "not_ready"
    UNSIGNED = "unsigned"
    MALFORMED_SIGNATURE = "malformed_signature"
    STALE_SIGNATURE = "stale_signature"
    BAD_SIGNATURE = "bad_signature"
    REPLAYED = "replayed"
    REPLAY_CACHE_FULL = "replay_cache_full"
    UNREGISTERED = "unregistered"


REFUSALS = Counter(
    "cocoon_operator_api_refusals_total",
    "Requests the operator's API refused before doing any work, by reason.",
    ["reason"],
)

# Largest body per route (by its canonical path); anything else, GETs included, gets DEFAULT.
BODY_LIMITS: Mapping[str, int] = {
    "/attestation/v1/nodes/{node}/evidence": 8 * MiB,  # TDX/SNP quotes and 8 GPUs' reports
    "/meters/v1/register": 2 * MiB,  # one endpoint evidence document
    "/usage/v1/reports": 64 * KiB,  # one signed cumulative report
    "/payments/v1/channels/{namespace}/{name}/promises": 4 * KiB,
}
DEFAULT_BODY_LIMIT = 4 * KiB


@dataclass
class TokenBuckets:
    """`rate` tokens a second up to `burst`, per key; idle full buckets are forgotten."""

    rate: float
    burst: float
    max_keys: int = 100_000
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def take(self, key: str, *, now: float | None = None) -> float:
        """0 when admitted, else the seconds until a token is available."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate
        if len(self._buckets) >= self.max_keys and key not in self._buckets:
            self._forget_idle(now)
        self._buckets[key] = (tokens - 1, now)
        return 0.0

    def _forget_idle(self, now: float) -> None:
        self._buckets = {
            k: (t, last)
            for k, (t, last) in self._buckets.items()
            if t + (now - last) * self.rate < self.burst
        }


@dataclass(frozen=True)
class Limits:
    per_source_rate: float = 50.0
    per_source_burst: float = 200.0
    per_key_rate: float = 5.0  # a meter polls credit every 2 s
    per_key_burst: float = 20.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Limits:
        env = os.environ if env is None else env
        return cls(
            per_source_rate=float(env.get("COCOON_API_RATE_PER_SOURCE", cls.per_source_rate)),
            per_source_burst=float(env.get("COCOON_API_BURST_PER_SOURCE", cls.per_source_burst)),
        )


def refuse(
    reason: Refusal, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A counted refusal in the API's one JSON error shape."""
    REFUSALS.labels(reason=reason.value).inc()
    return web.json_response(
        {"error": {"reason": code, "message": message}}, status=status, headers=headers
    )


def too_many(wait: float, what: str) -> web.Response:
    seconds = max(1, math.ceil(wait))
    return refuse(
        Refusal.RATE_LIMITED,
        429,
        "TooManyRequests",
        f"{what} sent more requests than the operator admits; wait {seconds} s (Retry-After) "
        "and retry with backoff",
        headers={"Retry-After": str(seconds)},
    )


def _too_large(limit: int) -> web.Response:
    response = refuse(
        Refusal.TOO_LARGE,
        413,
        "RequestTooLarge",
        f"the request body is larger than {limit} bytes, this route's limit; send only the "
        "document the route expects",
    )
    response.force_close()  # the unread body must not be taken for the next request
    return response


def body_limit(request: web.Request) -> int:
    info = request.match_info.route.resource
    canonical = info.canonical if info is not None else ""
    return BODY_LIMITS.get(canonical, DEFAULT_BODY_LIMIT)


def middleware(limits: Limits) -> Middleware:
    sources = TokenBuckets(limits.per_source_rate, limits.per_source_burst)

    @web.middleware
    async def admit(request: web.Request, handler: Handler) -> web.StreamResponse:
        wait = sources.take(request.remote or "unknown")
        if wait:
            return too_many(wait, "this address")
        limit = body_limit(request)
        declared = request.content_length
        if declared is not None and declared > limit:
            return _too_large(limit)
        try:
            return await handler(request.clone(client_max_size=limit))
        except web.HTTPRequestEntityTooLarge:
            return _too_large(limit)

    return admit
