"""aiohttp servers with their error answers and error logs replaced (the meter's and the
operator's).

aiohttp answers a request it cannot parse (a NUL byte in a header, a body declared chunked but
sent raw, an oversized header) with a plain-text 400 whose text is the parser's message, and
logs that message with a traceback: both quote the raw bytes received, a bearer token or a
prompt. Here every such answer is a JSON error in the server's own shape saying what to fix,
and the log line carries the status and the exception's type only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)

# (status, code, message) -> JSON body, in the shape of the server's other refusals.
ErrorBody = Callable[[int, str, str], bytes]

_MALFORMED = (
    "the request is not well-formed HTTP/1.1 (request line, headers or body framing); "
    "send printable ASCII header values, a valid Content-Length or chunked encoding, and "
    "nothing after the body"
)
_HEADERS_TOO_LARGE = (
    "a request header line is too long or there are too many headers; keep each header under "
    "8 KiB and send fewer than 128"
)


def refusal(status: int, exc: BaseException | None) -> tuple[int, str, str]:
    """The answer to a request aiohttp failed: (status, code, message), never its text."""
    if isinstance(exc, LineTooLong):
        return 431, "BadRequest", _HEADERS_TOO_LARGE
    if status == 413:
        return 413, "RequestTooLarge", "the request is too large for this server"
    if status == 504:
        return 504, "RequestTimeout", "the server timed out handling the request; retry"
    if status < 500:
        return 400, "BadRequest", _MALFORMED
    return 500, "InternalError", (
        "the server failed handling the request and changed nothing; retry, and report it "
        "if it persists"
    )


class _GuardedHandler(RequestHandler):
    error_body: ErrorBody

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Answer JSON; log the status and the exception's type, never its message."""
        status, code, text = refusal(status, exc)
        log.warning("request refused by the HTTP layer", extra={
            "status": status, "error": type(exc).__name__ if exc is not None else None,
        })
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already started")
        response = web.Response(
            status=status, body=self.error_body(status, code, text),
            content_type="application/json",
        )
        response.force_close()
        return response


class GuardedAppRunner(web.AppRunner):
    """An AppRunner whose connections answer parse and handler failures as `error_body` says.

    `header_timeout` is aiohttp's keep-alive timeout, which bounds both an idle keep-alive
    connection and a request whose headers never finish (aiohttp arms it when the connection
    opens and closes a connection that has not delivered a whole request head by then).
    """

    def __init__(
        self, app: web.Application, *, header_timeout: float, error_body: ErrorBody,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, keepalive_timeout=header_timeout, **kwargs)
        self._handler_class: type[_GuardedHandler] = type("Handler", (_GuardedHandler,), {
            "error_body": staticmethod(error_body),
        })

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        handler_class = self._handler_class

        class _Server(web.Server):
            def __call__(self) -> RequestHandler:
                return handler_class(self, loop=self._loop, **self._kwargs)

        server.__class__ = _Server
        return server
