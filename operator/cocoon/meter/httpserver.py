"""The meter's HTTP server: aiohttp with its error answers and error logs replaced.

aiohttp answers a request it cannot parse (a NUL byte in a header, a body declared chunked but
sent raw, an oversized header) with a plain-text 400 whose text is the parser's message, and
logs that message with a traceback: both quote the raw bytes received, a bearer token or a
prompt. Here every such answer is a JSON error in the meter's shape saying what to fix, and
the log line carries the status and the exception's type only.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler

from cocoon.meter.errors import MeterError, Reason

log = logging.getLogger(__name__)

_MALFORMED = (
    "the request is not well-formed HTTP/1.1 (request line, headers or body framing); "
    "send printable ASCII header values, a valid Content-Length or chunked encoding, and "
    "nothing after the body"
)
_HEADERS_TOO_LARGE = (
    "a request header line is too long or there are too many headers; keep each header under "
    "8 KiB and send fewer than 128"
)


def _refusal(status: int, exc: BaseException | None) -> tuple[int, MeterError]:
    if isinstance(exc, LineTooLong):
        return 431, MeterError(Reason.BAD_REQUEST, _HEADERS_TOO_LARGE)
    if status == 413:
        return 413, MeterError(Reason.TOO_LARGE, "the request is too large for this pool")
    if status == 504:
        return 504, MeterError(Reason.TIMEOUT, "the meter timed out handling the request; retry")
    if status < 500:
        return 400, MeterError(Reason.BAD_REQUEST, _MALFORMED)
    return 500, MeterError(
        Reason.UPSTREAM,
        "the meter failed handling the request and did not charge it; retry, and report it to "
        "the pool's provider if it persists",
    )


class _GuardedHandler(RequestHandler):
    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Answer JSON; log the status and the exception's type, never its message."""
        status, error = _refusal(status, exc)
        log.warning("request refused by the HTTP layer", extra={
            "status": status, "error": type(exc).__name__ if exc is not None else None,
        })
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already started")
        response = web.Response(
            status=status, body=error.body(), content_type="application/json"
        )
        response.force_close()
        return response


class _GuardedServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _GuardedHandler(self, loop=self._loop, **self._kwargs)


class GuardedAppRunner(web.AppRunner):
    """An AppRunner whose connections use `_GuardedHandler`.

    `keepalive_timeout` bounds both an idle keep-alive connection and a request whose headers
    never finish (aiohttp arms it when the connection opens and closes a connection that has
    not delivered a whole request head by then).
    """

    def __init__(self, app: web.Application, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, keepalive_timeout=header_timeout, **kwargs)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _GuardedServer
        return server
