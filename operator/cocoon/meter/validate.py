"""KServe v2 request checks made before any upstream call, so a malformed request is the
caller's 400 with a reason, never Triton's 500 (Triton answers some malformed requests, such as
an infer without `inputs`, with 500 Internal Server Error).

Only the JSON part is checked: `infer` may carry binary tensors after a JSON header of
`Inference-Header-Content-Length` bytes. The checks cover the request's shape (types of the
fields Triton parses); whether tensors match the model stays Triton's to say.
"""

from __future__ import annotations

import json
from typing import Any

from cocoon.meter.errors import MeterError, Reason

HEADER_LENGTH = "Inference-Header-Content-Length"
# Triton's tensor shapes are int64.
_MAX_DIM = (1 << 63) - 1


def _bad(message: str) -> MeterError:
    return MeterError(Reason.BAD_REQUEST, message)


def check_json(body: bytes, headers: object, endpoint: str) -> None:
    """Refuse a body whose JSON part is not valid UTF-8 JSON of a KServe v2 request's shape.

    Triton reads the body as JSON whatever its Content-Type, unless the header length is given.
    """
    get = headers.get  # type: ignore[attr-defined]
    length_header = get(HEADER_LENGTH)
    document = body
    if endpoint == "infer" and length_header is not None:
        if not (length_header.isascii() and length_header.isdigit()) or int(
            length_header
        ) > len(body):
            raise MeterError(
                Reason.BAD_REQUEST,
                f"{HEADER_LENGTH} must be a whole number no larger than the body "
                f"({len(body)} bytes); it gives the length of the JSON part",
            )
        document = body[: int(length_header)]
    try:
        parsed = json.loads(document)
    except UnicodeDecodeError:
        raise MeterError(
            Reason.BAD_REQUEST, "the request's JSON is not valid UTF-8; encode it as UTF-8"
        ) from None
    except (ValueError, RecursionError):
        raise MeterError(
            Reason.BAD_REQUEST,
            f"the request body is not valid JSON; send a KServe v2 {endpoint} JSON object",
        ) from None
    if not isinstance(parsed, dict):
        raise MeterError(
            Reason.BAD_REQUEST,
            f"the request body must be a JSON object (a KServe v2 {endpoint} request), "
            f"not a {type(parsed).__name__}",
        )
    if endpoint == "infer":
        check_infer(parsed)
    elif "parameters" in parsed and not isinstance(parsed["parameters"], dict):
        raise _bad("`parameters` must be a JSON object")


def _tensor(tensor: Any, where: str, *, full: bool) -> None:
    if not isinstance(tensor, dict):
        raise _bad(f"each of `{where}` must be a JSON object describing a tensor")
    if not isinstance(tensor.get("name"), str):
        raise _bad(f"each of `{where}` needs a string `name`")
    if "parameters" in tensor and not isinstance(tensor["parameters"], dict):
        raise _bad(f"`{where}[].parameters` must be a JSON object")
    if not full:
        return
    if not isinstance(tensor.get("datatype"), str):
        raise _bad(f"each of `{where}` needs a string `datatype` (FP32, INT64, BYTES, ...)")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= _MAX_DIM for d in shape
    ):
        raise _bad(f"each of `{where}` needs a `shape`: a list of non-negative integers")


def check_infer(request: dict[str, Any]) -> None:
    """The shape of a KServe v2 infer request: `inputs` (required) and `outputs` are lists of
    tensors; `id` is a string; `parameters` objects."""
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise _bad("an infer request needs `inputs`: a non-empty list of tensors")
    for tensor in inputs:
        _tensor(tensor, "inputs", full=True)
    outputs = request.get("outputs", [])
    if not isinstance(outputs, list):
        raise _bad("`outputs` must be a list of tensors")
    for tensor in outputs:
        _tensor(tensor, "outputs", full=False)
    if "id" in request and not isinstance(request["id"], str):
        raise _bad("`id` must be a string")
    if "parameters" in request and not isinstance(request["parameters"], dict):
        raise _bad("`parameters` must be a JSON object")
