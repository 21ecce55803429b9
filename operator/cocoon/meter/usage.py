"""How a call's billable units are counted from what Triton returns.

Convention (documented for model authors in docs/metering.md):
- every call that Triton answers successfully, or that delivers at least one token, is one
  `requests` unit; failed calls cost nothing;
- a streamed response that carries outputs is one output token;
- a model that knows better reports usage as the output tensors `prompt_tokens` and
  `completion_tokens` (integer, shape [1], totals for the call; sent with the last response of a
  stream), and optionally `cached_prompt_tokens` (part of the prompt served from a prompt cache)
  and `reasoning_tokens` (part of the completion). A reported `completion_tokens` replaces the
  count of streamed responses; the last reported value wins. Tensors rather than response
  parameters because Triton 2.51's python backend cannot set response parameters, and tensors
  survive every endpoint (infer, generate, gRPC).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, replace
from typing import Any

from cocoon.meter.pricing import Units

PROMPT_TOKENS = "prompt_tokens"
COMPLETION_TOKENS = "completion_tokens"
CACHED_PROMPT_TOKENS = "cached_prompt_tokens"
REASONING_TOKENS = "reasoning_tokens"
USAGE_TENSORS = (PROMPT_TOKENS, COMPLETION_TOKENS, CACHED_PROMPT_TOKENS, REASONING_TOKENS)
_USAGE_MARK = b"_tokens"  # cheap pre-check before parsing any JSON
_BINARY_FORMATS = {"INT32": "<i", "INT64": "<q", "UINT32": "<I", "UINT64": "<Q"}


def _as_int(value: Any) -> int | None:
    while isinstance(value, list) and value:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


@dataclass(slots=True)
class UsageCounter:
    """Accumulates one call's usage as responses go by.

    `streaming` calls count each response with outputs as an output token; a reported
    `completion_tokens` replaces the count of the responses since the previous report (one
    report per request, so a gRPC stream carrying several requests adds them up).
    """

    streaming: bool = False
    requests: int = 1
    delivered: int = 0
    unreported: int = 0
    input_tokens: int = 0
    reported_output: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    failed: bool = False

    def add_response(self, usage: dict[str, int]) -> None:
        self.delivered += 1
        if COMPLETION_TOKENS in usage:
            self.reported_output += max(usage[COMPLETION_TOKENS], 0)
            self.unreported = 0
        else:
            self.unreported += 1
        self.input_tokens += max(usage.get(PROMPT_TOKENS, 0), 0)
        self.cached_input_tokens += max(usage.get(CACHED_PROMPT_TOKENS, 0), 0)
        self.reasoning_tokens += max(usage.get(REASONING_TOKENS, 0), 0)

    def copy(self) -> UsageCounter:
        return replace(self)

    def units(self) -> Units:
        """Units for what was delivered; nothing when the call failed before any response."""
        if self.delivered == 0 and self.failed:
            return Units()
        output = self.reported_output + (self.unreported if self.streaming else 0)
        return Units(
            self.requests, self.input_tokens, output,
            min(self.cached_input_tokens, self.input_tokens), min(self.reasoning_tokens, output),
        )


def generate_usage(document: Any) -> dict[str, int]:
    """Usage from a generate / generate_stream JSON object (outputs are top-level keys)."""
    if not isinstance(document, dict):
        return {}
    usage = {}
    for name in USAGE_TENSORS:
        value = _as_int(document.get(name))
        if value is not None:
            usage[name] = value
    return usage


def infer_usage(body: bytes, header_length: int | None) -> dict[str, int]:
    """Usage from a KServe v2 infer response, JSON or binary-tensor extension."""
    head = body if header_length is None else body[:header_length]
    if _USAGE_MARK not in head:
        return {}
    try:
        document = json.loads(head)
    except (ValueError, UnicodeDecodeError):
        return {}
    outputs = document.get("outputs") if isinstance(document, dict) else None
    if not isinstance(outputs, list):
        return {}
    usage: dict[str, int] = {}
    offset = header_length or 0
    for output in outputs:
        if not isinstance(output, dict):
            continue
        params = output.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        name = output.get("name")
        if isinstance(size, int):
            fmt = _BINARY_FORMATS.get(str(output.get("datatype")))
            if name in USAGE_TENSORS and fmt and size >= struct.calcsize(fmt):
                usage[name] = int(struct.unpack_from(fmt, body, offset)[0])
            offset += size
        elif name in USAGE_TENSORS:
            value = _as_int(output.get("data"))
            if value is not None:
                usage[name] = value
    return usage


def is_error_document(body: bytes) -> bool:
    """Triton's error shape `{"error": "..."}`, which generate returns even with HTTP 200."""
    return body.lstrip()[:9] == b'{"error":'


class SseMeter:
    """Splits generate_stream bytes into events and counts them.

    Triton sends one `data: {json}` event per response, separated by a blank line, and an
    error mid-stream as `data: {"error": ...}`. Only complete events count, so a client that
    disconnects is charged for the events whose bytes were fully sent.
    """

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    def split(self, chunk: bytes) -> list[bytes]:
        """The events this chunk completes (the rest waits for the next chunk)."""
        data = self._pending + chunk if self._pending else chunk
        *events, self._pending = data.split(b"\n\n")
        return events


def count_event(counter: UsageCounter, event: bytes) -> None:
    payload = event.strip()
    if not payload.startswith(b"data:"):
        return
    payload = payload[5:].lstrip()
    if is_error_document(payload):
        counter.failed = True
        return
    usage: dict[str, int] = {}
    if _USAGE_MARK in payload:
        try:
            usage = generate_usage(json.loads(payload))
        except ValueError:
            usage = {}
    counter.add_response(usage)
