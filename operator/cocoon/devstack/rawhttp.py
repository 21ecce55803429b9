"""Raw HTTP/1.1 over TCP or TLS: for requests no client library will send (broken framing, NUL
bytes), the attacks the meter's and the operator's HTTP layers must answer without echoing."""

from __future__ import annotations

import asyncio
import gzip
import json
import ssl
from typing import Any


async def exchange(port: int, data: bytes, tls: ssl.SSLContext | None = None) -> tuple[int, Any]:
    """Send `data`, read until the server closes or sends a whole response; (status, JSON)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
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


def _raw(head: str, body: bytes = b"") -> bytes:
    return head.encode("latin-1") + b"\r\n\r\n" + body


def malformed(
    path: str, credential: str, secret: str, prompt: bytes, canary: str
) -> dict[str, bytes]:
    """Broken requests to `path`, each carrying `secret` (a bearer token), `prompt` (a JSON body)
    or `canary` where a parser's error message would echo it: bad chunking, NUL bytes, invalid
    UTF-8, oversized headers, bad gzip, bad JSON. Broken bodies come with the valid `credential`,
    so they reach the body's parsers."""
    auth = {"Authorization": f"Bearer {credential}"}
    half = gzip.compress(prompt)[: len(gzip.compress(prompt)) // 2]
    return {
        "nul byte in the credential": request(
            path, {"Authorization": f"Bearer {secret}\x00x", "Content-Length": "0"}
        ),
        "nul byte in a header name": _raw(
            f"POST {path} HTTP/1.1\r\nHost: m\r\nX-{canary}\x00: 1\r\n"
            f"Authorization: Bearer {secret}"
        ),
        "invalid utf-8 in a header": request(
            path, {"Authorization": f"Bearer {secret}\xff\xfe", "Content-Length": "0"}
        ),
        "header line too long": request(
            path,
            {"Authorization": f"Bearer {secret}", "X-Pad": canary * 1000, "Content-Length": "0"},
        ),
        "chunked declared, raw sent": request(
            path, {**auth, "Transfer-Encoding": "chunked"}, prompt
        ),
        "chunk size not hex": request(
            path,
            {**auth, "Transfer-Encoding": "chunked"},
            f"{canary}\r\n".encode() + prompt + b"\r\n0\r\n\r\n",
        ),
        "bad gzip": request(
            path,
            {**auth, "Content-Encoding": "gzip", "Content-Length": str(len(prompt) + 10)},
            b"\x1f\x8b\x08\x00garbage" + prompt[: len(prompt) - 1],
        ),
        "gzip cut in half": request(
            path, {**auth, "Content-Encoding": "gzip", "Content-Length": str(len(half))}, half
        ),
        "malformed JSON": request(
            path, {**auth, "Content-Length": str(len(prompt) - 1)}, prompt[:-1]
        ),
        "JSON that is not an object": request(
            path, {**auth, "Content-Length": str(len(prompt) + 2)}, b"[" + prompt + b"]"
        ),
        "invalid utf-8 in JSON": request(
            path,
            {**auth, "Content-Length": str(len(prompt) + 1)},
            prompt.replace(canary.encode(), canary.encode() + b"\xff", 1),
        ),
        "garbage request line": _raw(f"{canary} /{secret} HTTP/1.1\r\nHost: m"),
        "bad content length": request(path, {**auth, "Content-Length": canary}, prompt),
    }
