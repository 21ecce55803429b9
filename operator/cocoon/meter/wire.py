"""Just enough of the protobuf wire format to meter KServe v2 gRPC without decoding messages.

The gRPC proxy forwards raw bytes; it only needs a request's model name and, from a response,
whether it carries outputs and the usage tensors. Scanning the few fields we need is faster than
parsing whole messages (whose tensors may be megabytes) and needs no generated code.
Field numbers are those of Triton's grpc_service.proto.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from cocoon.meter.usage import USAGE_TENSORS

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5

# ModelInferRequest / ModelInferResponse
_MODEL_NAME = 1
_ID = 3
_RESPONSE_PARAMETERS = 4
_RESPONSE_OUTPUTS = 5
_RESPONSE_RAW_OUTPUTS = 6
# ModelInferResponse.InferOutputTensor and InferTensorContents
_TENSOR_NAME, _TENSOR_DATATYPE, _TENSOR_CONTENTS = 1, 2, 5
_INT_CONTENTS, _INT64_CONTENTS, _UINT_CONTENTS, _UINT64_CONTENTS = 2, 3, 4, 5
# ModelStreamInferResponse
_STREAM_ERROR, _STREAM_RESPONSE = 1, 2
# map<string, InferParameter> entries, InferParameter.bool_param
_MAP_KEY, _MAP_VALUE, _BOOL_PARAM = 1, 2, 1
_FINAL = b"triton_final_response"

_USAGE_MARK = b"_tokens"
_RAW_FORMATS = {"INT32": "<i", "INT64": "<q", "UINT32": "<I", "UINT64": "<Q"}


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WireError("varint too long")


def fields(data: bytes | memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """Top-level (field number, value): ints for varint/fixed fields, views for the rest."""
    buf = memoryview(data)
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == _VARINT:
            value, pos = _varint(buf, pos)
            yield number, value
        elif wire_type == _LEN:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise WireError("truncated length-delimited field")
            yield number, buf[pos : pos + length]
            pos += length
        elif wire_type == _I64:
            if pos + 8 > end:
                raise WireError("truncated fixed64")
            yield number, int.from_bytes(buf[pos : pos + 8], "little")
            pos += 8
        elif wire_type == _I32:
            if pos + 4 > end:
                raise WireError("truncated fixed32")
            yield number, int.from_bytes(buf[pos : pos + 4], "little")
            pos += 4
        else:
            raise WireError(f"unsupported wire type {wire_type}")


def _text(value: int | memoryview) -> str:
    if isinstance(value, int):
        raise WireError("expected a string field")
    return bytes(value).decode("utf-8", errors="replace")


def model_name(request: bytes) -> str:
    """The model a ModelInferRequest (or ModelMetadata/ReadyRequest: also field 1) names."""
    return request_names(request)[0]


def request_names(request: bytes) -> tuple[str, str]:
    """(model name, request id) of a ModelInferRequest; Triton echoes the id in its responses."""
    model = ident = ""
    for number, value in fields(request):
        if number == _MODEL_NAME:
            model = _text(value)
        elif number == _ID:
            ident = _text(value)
    return model, ident


def _is_final_entry(entry: memoryview) -> bool:
    """Whether a parameters map entry is `triton_final_response: true`."""
    key = b""
    flag = False
    for number, value in fields(entry):
        if number == _MAP_KEY and isinstance(value, memoryview):
            key = bytes(value)
        elif number == _MAP_VALUE and isinstance(value, memoryview):
            flag = any(n == _BOOL_PARAM and v == 1 for n, v in fields(value))
    return key == _FINAL and flag


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value >= 1 << (bits - 1) else value


def _first_content_int(contents: memoryview) -> int | None:
    for number, value in fields(contents):
        if number not in (_INT_CONTENTS, _INT64_CONTENTS, _UINT_CONTENTS, _UINT64_CONTENTS):
            continue
        if isinstance(value, memoryview):  # packed repeated
            if not len(value):
                continue
            first, _ = _varint(value, 0)
        else:
            first = value
        return _signed(first, 64) if number in (_INT_CONTENTS, _INT64_CONTENTS) else first
    return None


@dataclass(frozen=True, slots=True)
class ResponseSummary:
    """What metering needs from one ModelInferResponse: on a stream also the request it answers
    (the id Triton echoes) and whether it is that request's last (`triton_final_response`)."""

    has_outputs: bool
    usage: dict[str, int]
    id: str = ""
    final: bool = False


def _envelope(response: bytes | memoryview) -> tuple[bool, str, bool]:
    """(has outputs, id, final) from the response's top-level fields."""
    has_outputs = final = False
    ident = ""
    for number, value in fields(response):
        if number == _RESPONSE_OUTPUTS:
            has_outputs = True
        elif number == _ID:
            ident = _text(value)
        elif number == _RESPONSE_PARAMETERS and isinstance(value, memoryview):
            final = final or _is_final_entry(value)
    return has_outputs, ident, final


def summarize_response(response: bytes | memoryview) -> ResponseSummary:
    """Whether the response carries outputs, and the values of the usage tensors it carries."""
    # `in` on a memoryview compares items, not bytes: search the whole underlying message
    # instead (a superset, so a miss there is a miss here).
    haystack = response.obj if isinstance(response, memoryview) else response
    has_outputs, ident, final = _envelope(response)
    if isinstance(haystack, bytes | bytearray) and _USAGE_MARK not in haystack:
        # No usage tensor can be named here.
        return ResponseSummary(has_outputs, {}, ident, final)
    outputs: list[tuple[str, str, int | None]] = []
    raw: list[memoryview] = []
    for number, value in fields(response):
        if number == _RESPONSE_OUTPUTS and isinstance(value, memoryview):
            name = datatype = ""
            content: int | None = None
            for inner, item in fields(value):
                if inner == _TENSOR_NAME:
                    name = _text(item)
                elif inner == _TENSOR_DATATYPE:
                    datatype = _text(item)
                elif inner == _TENSOR_CONTENTS and isinstance(item, memoryview):
                    content = _first_content_int(item)
            outputs.append((name, datatype, content))
        elif number == _RESPONSE_RAW_OUTPUTS and isinstance(value, memoryview):
            raw.append(value)
    usage: dict[str, int] = {}
    for index, (name, datatype, content) in enumerate(outputs):
        if name not in USAGE_TENSORS:
            continue
        if content is not None:
            usage[name] = content
        elif index < len(raw) and datatype in _RAW_FORMATS:
            fmt = _RAW_FORMATS[datatype]
            if len(raw[index]) >= struct.calcsize(fmt):
                usage[name] = int(struct.unpack_from(fmt, raw[index])[0])
    return ResponseSummary(bool(outputs), usage, ident, final)


def response_usage(response: bytes) -> dict[str, int]:
    """The usage tensors of a ModelInferResponse; skips the scan when no usage tensor is named
    (a usage tensor's name, ending in `_tokens`, must appear in the bytes)."""
    if _USAGE_MARK not in response:
        return {}
    return summarize_response(response).usage


def summarize_stream_response(message: bytes) -> tuple[str | None, ResponseSummary]:
    """(error message or None, summary) of one ModelStreamInferResponse."""
    error: str | None = None
    summary = ResponseSummary(has_outputs=False, usage={})
    for number, value in fields(message):
        if number == _STREAM_ERROR:
            text = _text(value)
            error = text or None
        elif number == _STREAM_RESPONSE and isinstance(value, memoryview):
            summary = summarize_response(value)
    return error, summary
