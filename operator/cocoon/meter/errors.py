"""Rejections the meter itself produces, one shape for HTTP and gRPC.

HTTP bodies are `{"error": "<code>: <message>", "code": ..., "message": ...}`: KServe v2 says
`error` is a string, and clients built on that (perf_analyzer, tritonclient) fail to parse any
other shape, so the machine-readable code and the bare message sit beside it. Messages say what
is wrong and what to do. Errors that Triton produces pass through unchanged.
"""

from __future__ import annotations

import json
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


HTTP_STATUS = {
    Reason.UNAUTHENTICATED: 401,
    Reason.NO_CREDIT: 402,
    Reason.OVERLOADED: 429,
    Reason.NOT_FOUND: 404,
    Reason.FORBIDDEN: 403,
    Reason.UPSTREAM: 502,
    Reason.BAD_REQUEST: 400,
}

GRPC_STATUS = {
    Reason.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    Reason.NO_CREDIT: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.OVERLOADED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Reason.FORBIDDEN: grpc.StatusCode.PERMISSION_DENIED,
    Reason.UPSTREAM: grpc.StatusCode.UNAVAILABLE,
    Reason.BAD_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
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
