"""A minimal HTTP/1.1 client for the meter's hot path: POST to Triton over pooled keep-alive
connections and read one complete response.

aiohttp's client costs ~100 µs of CPU per request in object setup (request/response objects,
stream readers, tasks, timers, header multidicts); this protocol does only what proxying a
complete unary response needs. Streams (generate_stream) keep using aiohttp.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import cast

_HEAD_END = b"\r\n\r\n"
_MAX_HEAD = 64 * 1024


class UpstreamError(ConnectionError):
    """Triton could not be reached, or broke the connection before a complete response."""


class UpstreamResponse:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers  # lower-case names
        self.body = body


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.received = False
        self._buf = bytearray()
        self._waiter: asyncio.Future[UpstreamResponse] | None = None
        self._status = 0
        self._headers: dict[str, str] | None = None
        self._length = -1  # content length; -2: chunked
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(UpstreamError("the model server closed the connection"))

    def data_received(self, data: bytes) -> None:
        self.received = True
        self._buf += data
        if self._waiter is not None and not self._waiter.done():
            try:
                response = self._parse()
            except UpstreamError as exc:
                self.keep_alive = False
                self._waiter.set_exception(exc)
                return
            if response is not None:
                self._waiter.set_result(response)

    def request(self, head: bytes, body: bytes) -> asyncio.Future[UpstreamResponse]:
        assert self.transport is not None
        self._buf.clear()
        self._headers = None
        self.received = False
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        self.transport.writelines((head, body))
        return waiter

    def _parse(self) -> UpstreamResponse | None:
        buf = self._buf
        if self._headers is None:
            end = buf.find(_HEAD_END)
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    raise UpstreamError("response head too large")
                return None
            lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
            del buf[: end + 4]
            status_line = lines[0]
            if not status_line.startswith("HTTP/1."):
                raise UpstreamError("not an HTTP/1.x response")
            self._status = int(status_line[9:12])
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            self._headers = headers
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self._length = -2
            elif "content-length" in headers:
                self._length = int(headers["content-length"])
            else:
                raise UpstreamError("response without a length")
            if headers.get("connection", "").lower() == "close" or status_line[7] == "0":
                self.keep_alive = False
        if self._length >= 0:
            if len(buf) < self._length:
                return None
            body = bytes(buf[: self._length])
            del buf[: self._length]
        else:
            decoded = _dechunk(buf)
            if decoded is None:
                return None
            body = decoded
        if buf:  # bytes beyond the response: the connection is out of step
            self.keep_alive = False
        return UpstreamResponse(self._status, self._headers, body)


def _dechunk(buf: bytearray) -> bytes | None:
    """The body of a complete chunked message in `buf` (consumed), or None if incomplete."""
    out = bytearray()
    pos = 0
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return None
        try:
            size = int(bytes(buf[pos:line_end]).split(b";", 1)[0], 16)
        except ValueError as exc:
            raise UpstreamError("malformed chunk size") from exc
        pos = line_end + 2
        if size == 0:
            trailer_end = buf.find(b"\r\n\r\n", pos - 2)
            if trailer_end < 0:
                return None
            del buf[: trailer_end + 4]
            return bytes(out)
        if len(buf) < pos + size + 2:
            return None
        out += buf[pos : pos + size]
        pos += size + 2


class UpstreamPool:
    """Keep-alive connections to one host:port; the gate bounds how many are ever in use."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._authority = f"{host}:{port}"
        self._idle: deque[_Connection] = deque()
        self.opened = 0

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(_Connection, self.host, self.port), 5
            )
        except (OSError, TimeoutError) as exc:
            raise UpstreamError(f"cannot connect to the model server: {exc}") from exc
        self.opened += 1
        return protocol

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> UpstreamResponse:
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self._authority}\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n"
        ).encode("latin-1")
        while self._idle:
            conn = self._idle.pop()
            if conn.closed:
                continue
            try:
                return await self._exchange(conn, head, body)
            except UpstreamError:
                if conn.received:
                    raise
                # A kept-alive connection the server had closed: nothing reached it; retry.
        return await self._exchange(await self._connect(), head, body)

    async def _exchange(self, conn: _Connection, head: bytes, body: bytes) -> UpstreamResponse:
        try:
            response = await conn.request(head, body)
        except BaseException:
            _close(conn)
            raise
        if conn.keep_alive and not conn.closed:
            self._idle.append(conn)
        else:
            _close(conn)
        return response

    def close(self) -> None:
        while self._idle:
            _close(self._idle.pop())


def _close(conn: _Connection) -> None:
    conn.keep_alive = False
    if conn.transport is not None and not conn.transport.is_closing():
        conn.transport.close()
