"""Malformed requests against the running meter: each gets a JSON 4xx, and no log line, metric
or usage report ever holds the credential or the prompt it carried."""

import gzip

import pytest
from conftest import AUTH, CREDENTIAL, get_text
from rawhttp import exchange, request

from cocoon.meter.journal import read_charges

pytestmark = pytest.mark.triton
CANARY = "zebracanary7731"
SECRET = f"{CANARY}-credential"
PROMPT = f'{{"text_input": "{CANARY} secret prompt", "max_tokens": 1}}'.encode()
GENERATE = "/v2/models/tokens/generate"


def _raw(head: str, body: bytes = b"") -> bytes:
    return head.encode("latin-1") + b"\r\n\r\n" + body


ATTACKS = {
    "nul byte in the credential": request(
        GENERATE, {"Authorization": f"Bearer {SECRET}\x00x", "Content-Length": "0"}),
    "nul byte in a header name": _raw(
        f"POST {GENERATE} HTTP/1.1\r\nHost: m\r\nX-{CANARY}\x00: 1\r\n"
        f"Authorization: Bearer {SECRET}"),
    "invalid utf-8 in a header": request(
        GENERATE, {"Authorization": f"Bearer {SECRET}\xff\xfe", "Content-Length": "0"}),
    "header line too long": request(
        GENERATE, {"Authorization": f"Bearer {SECRET}", "X-Pad": CANARY * 1000,
                   "Content-Length": "0"}),
    "chunked declared, raw sent": request(
        GENERATE, {**AUTH, "Transfer-Encoding": "chunked"}, PROMPT),
    "chunk size not hex": request(
        GENERATE, {**AUTH, "Transfer-Encoding": "chunked"},
        f"{CANARY}\r\n".encode() + PROMPT + b"\r\n0\r\n\r\n"),
    "bad gzip": request(
        GENERATE, {**AUTH, "Content-Encoding": "gzip", "Content-Length": str(len(PROMPT) + 10)},
        b"\x1f\x8b\x08\x00garbage" + PROMPT[:len(PROMPT) - 1]),
    "gzip cut in half": request(
        GENERATE, {**AUTH, "Content-Encoding": "gzip",
                   "Content-Length": str(len(gzip.compress(PROMPT)) // 2)},
        gzip.compress(PROMPT)[:len(gzip.compress(PROMPT)) // 2]),
    "malformed JSON": request(
        GENERATE, {**AUTH, "Content-Length": str(len(PROMPT) - 1)}, PROMPT[:-1]),
    "JSON that is not an object": request(
        GENERATE, {**AUTH, "Content-Length": str(len(PROMPT) + 2)}, b"[" + PROMPT + b"]"),
    "invalid utf-8 in JSON": request(
        GENERATE, {**AUTH, "Content-Length": str(len(PROMPT) + 1)},
        PROMPT.replace(b"secret", b"secret\xff")),
    "garbage request line": _raw(f"{CANARY} /{SECRET} HTTP/1.1\r\nHost: m"),
    "bad content length": request(
        GENERATE, {**AUTH, "Content-Length": f"{CANARY}"}, PROMPT),
}


async def test_malformed_requests_get_json_4xx_and_leave_no_trace(meter):
    answers = {}
    for name, data in ATTACKS.items():
        status, answer = await exchange(meter.http_port, data)
        answers[name] = status
        assert 400 <= status < 500, (name, status, answer)
        assert answer["code"] in {"BadRequest", "Unauthenticated"}, (name, answer)
        assert answer["message"], name
    assert answers["header line too long"] == 431
    assert answers["bad gzip"] == answers["malformed JSON"] == 400
    # Nothing reached Triton or the journal, and the meter is still serving.
    assert list(read_charges(meter.journal)) == []
    assert meter.is_ready()
    for text in (
        meter.log_text(),
        await get_text(f"{meter.admin_url}/metrics"),
    ):
        assert CANARY not in text
        assert CREDENTIAL not in text
    log = meter.log_text()
    assert '"level": "debug"' in log
    assert "request refused by the HTTP layer" in log  # the parser's errors were logged
