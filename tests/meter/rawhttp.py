"""Raw HTTP/1.1 over TCP: for requests no client library will send (broken framing, NUL bytes)."""

from __future__ import annotations

import asyncio
import json
from typing import Any


async def exchange(port: int, data: bytes) -> tuple[int, Any]:
    """Send `data`, read until the server closes or sends a whole response; (status, JSON)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await read_response(reader)
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, Any]:
    """The response's status and JSON body; every meter answer, error or not, is JSON."""
    async with asyncio.timeout(30):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
        }
        length = int(headers.get("content-length", "0"))
        body = await reader.readexactly(length)
    assert headers.get("content-type", "").startswith("application/json"), (status, body)
    return status, json.loads(body)


def request(path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: meter", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
