"""Fair admission: what one caller may hold before the meter spends anything on it.

Order of a metered HTTP call: authenticate (cheap, holds nothing) → read the whole body, bounded
in size per route and in time → validate it → reserve credit and a slot → forward. A body that
trickles in or never ends therefore holds neither credit nor a pool slot, only its own channel's
reading allowance, so it cannot starve another tenant. Limits per channel and per pool bound
the calls in flight; every refusal is a `MeterError` (JSON 408/413/429 saying what to do).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from cocoon.meter.errors import MeterError, Reason

MiB = 1 << 20
ENDPOINTS = ("infer", "generate", "generate_stream")


def _default_body_limits() -> dict[str, int]:
    return {"infer": 16 * MiB, "generate": 4 * MiB, "generate_stream": 4 * MiB}


@dataclass(frozen=True)
class Limits:
    """Per-route body sizes (decompressed bytes), read timeouts and in-flight bounds."""

    max_body_bytes: dict[str, int] = field(default_factory=_default_body_limits)
    # Seconds to receive a request's headers (also the idle keep-alive timeout).
    header_timeout: float = 15.0
    # Seconds to receive a whole request body once its headers are in.
    body_timeout: float = 30.0
    # Calls one channel may have reading a body or in flight; 0 = the pool's limit / 4.
    max_in_flight_per_channel: int = 0

    def body_limit(self, endpoint: str) -> int:
        return self.max_body_bytes.get(endpoint, max(self.max_body_bytes.values()))

    def per_channel(self, pool_limit: int) -> int:
        return self.max_in_flight_per_channel or max(1, pool_limit // 4)


class ChannelSlots:
    """Counts the calls each channel holds (reading a body or in flight) against one bound."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[str, int] = {}

    def held(self, channel: str) -> int:
        return self._held.get(channel, 0)

    @contextlib.contextmanager
    def hold(self, channel: str) -> Iterator[None]:
        held = self._held.get(channel, 0)
        if held >= self.limit:
            raise MeterError(
                Reason.OVERLOADED,
                f"payment channel {channel} already has {held} calls in progress, its limit "
                "per channel; wait for some to finish, then retry with backoff",
            )
        self._held[channel] = held + 1
        try:
            yield
        finally:
            left = self._held[channel] - 1
            if left:
                self._held[channel] = left
            else:
                del self._held[channel]


def too_large(endpoint: str, limit: int) -> MeterError:
    return MeterError(
        Reason.TOO_LARGE,
        f"the request body is larger than {limit} bytes, this pool's limit for {endpoint}; "
        "send a smaller request (the provider sets the limit in the InferencePool's "
        "spec.meter.limits.maxBodyBytes)",
    )


async def read_body(request: web.Request, endpoint: str, limits: Limits) -> bytes:
    """The whole (decompressed) body, or a MeterError: 413 too large, 408 too slow, 400 bad.

    Exceptions from aiohttp's parser are never passed on or logged: their messages quote the
    raw bytes received (a prompt, a credential).
    """
    limit = limits.body_limit(endpoint)
    declared = request.content_length
    if declared is not None and declared > limit and not request.headers.get(
        "Content-Encoding"
    ):
        raise too_large(endpoint, limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(limits.body_timeout):
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise too_large(endpoint, limit)
                chunks.append(chunk)
    except TimeoutError:
        raise MeterError(
            Reason.TIMEOUT,
            f"the request body did not arrive within {limits.body_timeout:g} s; send the "
            "whole body promptly",
        ) from None
    except (HttpProcessingError, RequestPayloadError) as exc:
        raise MeterError(
            Reason.BAD_REQUEST,
            "the request body could not be decoded (" + _body_problem(exc) + "); send a "
            "well-formed body, uncompressed or validly gzip/deflate-compressed",
        ) from None
    return b"".join(chunks)


def _body_problem(exc: Exception) -> str:
    """A fixed description of a body error, never the parser's message (it quotes bytes)."""
    text = str(exc).lower()
    if "content-encoding" in text or "decompress" in text or "decode" in text:
        return "its Content-Encoding does not match its bytes"
    if "chunk" in text or "transfer" in text:
        return "its chunked transfer encoding is malformed"
    if "length" in text:
        return "it is shorter than its Content-Length"
    return "it is malformed"
