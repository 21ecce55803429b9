"""Rejections the meter itself produces, one shape for HTTP and gRPC.

HTTP bodies are `{"error": "<code>: <message>", "code": ..., "message": ...}`: KServe v2 says
`error` is a string, and clients built on that (perf_analyzer, tritonclient) fail to parse any
other shape, so the machine-readable code and the bare message sit beside it. Messages say what
is wrong and what to do. Triton's own errors keep this shape (`code` `ModelRejected`): a 4xx
keeps its status and Triton's message, as does a 500 whose message blames the request (it
becomes 400); any other 5xx becomes 502 `ModelError` (the model failed, not the meter).
"""

from __future__ import annotations

import json
import re
from enum import StrEnum

import grpc


class Reason(StrEnum):
    UNAUTHENTICATED = "Unauthenticated"
    NO_CREDIT = "InsufficientCredit"
    OVERLOADED = "Overloaded"
    NOT_FOUND = "NotFound"
    FORBIDDEN = "EndpointNotServed"
    UPSTREAM = "UpstreamUnavailable"
    BAD_REQUEST = "BadRequest"
    TOO_LARGE = "RequestTooLarge"
    TIMEOUT = "RequestTimeout"
    MODEL_ERROR = "ModelError"
    PRICE_ABOVE_MAX = "PriceAboveMaxPrice"


HTTP_STATUS = {
    Reason.UNAUTHENTICATED: 401,
    Reason.NO_CREDIT: 402,
    Reason.OVERLOADED: 429,
    Reason.NOT_FOUND: 404,
    Reason.FORBIDDEN: 403,
    Reason.UPSTREAM: 502,
    Reason.BAD_REQUEST: 400,
    Reason.TOO_LARGE: 413,
    Reason.TIMEOUT: 408,
    Reason.MODEL_ERROR: 502,
    Reason.PRICE_ABOVE_MAX: 409,
}

GRPC_STATUS = {
    Reason.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    Reason.NO_CREDIT: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.OVERLOADED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Reason.FORBIDDEN: grpc.StatusCode.PERMISSION_DENIED,
    Reason.UPSTREAM: grpc.StatusCode.UNAVAILABLE,
    Reason.BAD_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
    Reason.MODEL_ERROR: grpc.StatusCode.INTERNAL,
    Reason.PRICE_ABOVE_MAX: grpc.StatusCode.FAILED_PRECONDITION,
}


class MeterError(Exception):
    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.reason]

    @property
    def grpc_status(self) -> grpc.StatusCode:
        return GRPC_STATUS[self.reason]

    @property
    def grpc_message(self) -> str:
        """gRPC has one code for credit and overload, so the reason leads the message."""
        return f"{self.reason.value}: {self.message}"

    def body(self) -> bytes:
        return json.dumps({
            "error": f"{self.reason.value}: {self.message}",
            "code": self.reason.value,
            "message": self.message,
        }).encode()


def error_body(status: int, code: str, message: str) -> bytes:
    """The meter's JSON shape for refusals made below it, by the HTTP layer (cocoon.httpguard)."""
    return json.dumps({"error": f"{code}: {message}", "code": code, "message": message}).encode()


# Triton reports some malformed requests as 500 Internal Server Error; these messages say the
# request, not the model, is at fault, so the caller gets a 400.
_REQUEST_FAULT = re.compile(
    r"(?i)unable to parse|failed to parse|attempt to access|unexpected (inference )?(input|"
    r"output)|expected .* (input|shape|datatype)|invalid (argument|input|shape|datatype)|"
    r"must be|does not match"
)


def upstream_error(status: int, payload: bytes) -> tuple[int, bytes]:
    """Triton's error answer in the meter's shape: 4xx keeps its status, and so does a 500
    whose message blames the request (as 400); any other 5xx becomes 502 `ModelError`.

    Triton's message (about the request, to the caller who sent it) is kept; a body that is not
    Triton's `{"error": "..."}` is replaced by a fixed message.
    """
    try:
        document = json.loads(payload)
        message = document["error"] if isinstance(document, dict) else None
    except (ValueError, UnicodeDecodeError):
        message = None
    if not isinstance(message, str):
        message = "the model server refused the request without a reason"
    if status >= 500 and _REQUEST_FAULT.search(message):
        status = 400
    if status >= 500:
        error = MeterError(Reason.MODEL_ERROR, f"the model failed: {message}; retry, or report it "
                           "to the pool's provider if it persists")
        return error.http_status, error.body()
    return status, json.dumps({
        "error": message, "code": "ModelRejected", "message": message,
    }).encode()
