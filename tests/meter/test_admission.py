"""Attacks on the running meter's admission: slow bodies, huge bodies, one tenant hogging slots."""

import asyncio
import gzip
import json

import aiohttp
import pytest
from conftest import AUTH, CHANNEL, CREDENTIAL, PRICE

from cocoon.devstack.rawhttp import exchange, read_response, request
from cocoon.meter.journal import read_charges
from cocoon.meter.process import start_meter, write_credits

pytestmark = pytest.mark.triton

HOG = "test-credential-hog"
HOG_AUTH = {"Authorization": f"Bearer {HOG}"}
GENERATE = "/v2/models/tokens/generate"
SMALL = json.dumps({"text_input": "a b", "max_tokens": 1}).encode()


@pytest.fixture
def small_meter(triton_server, tmp_path):
    """A pool of 8 slots, 4 per channel, 64 bodies per channel being read, 60 s to send one."""
    write_credits(tmp_path / "credits.json", {
        CREDENTIAL: (CHANNEL, 10**15), HOG: ("tenant/hog", 10**15),
    })
    process = start_meter(triton_server, tmp_path, price=PRICE, extra_args=(
        "--max-in-flight=8", "--max-in-flight-per-channel=64", "--body-timeout=60",
    ))
    yield process
    process.stop()


async def _post(url, body, headers):
    async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def test_64_bodies_that_never_finish_do_not_starve_another_tenant(small_meter):
    writers = []
    for _ in range(64):
        _, writer = await asyncio.open_connection("127.0.0.1", small_meter.http_port)
        writer.write(request(GENERATE, {**HOG_AUTH, "Content-Length": "100000"}, SMALL[:5]))
        writers.append(writer)
    try:
        # The hog's 65th call is refused once its 64 bodies are all being read: then they are
        # all admitted as far as they will get.
        async with asyncio.timeout(30):
            while True:
                status, answer = await _post(small_meter.http_url + GENERATE, SMALL, HOG_AUTH)
                if status == 429:
                    assert "tenant/hog already has 64 calls in progress" in answer["message"]
                    break
        for _ in range(3):
            status, answer = await _post(small_meter.http_url + GENERATE, SMALL, AUTH)
            assert status == 200, answer
    finally:
        for writer in writers:
            writer.close()


async def test_one_channel_cannot_take_every_slot(triton_server, tmp_path):
    write_credits(tmp_path / "credits.json", {
        CREDENTIAL: (CHANNEL, 10**15), HOG: ("tenant/hog", 10**15),
    })
    meter = start_meter(triton_server, tmp_path, price=PRICE,
                        extra_args=("--max-in-flight=8", "--max-in-flight-per-channel=2"))
    slow = json.dumps({"text_input": "a b c d", "max_tokens": 4, "delay_ms": 1000}).encode()
    try:
        async with aiohttp.ClientSession() as s:
            streams = [
                await s.post(meter.http_url + "/v2/models/tokens/generate_stream", data=slow,
                             headers=HOG_AUTH)
                for _ in range(2)
            ]
            assert [r.status for r in streams] == [200, 200]
            status, answer = await _post(meter.http_url + GENERATE, SMALL, HOG_AUTH)
            assert status == 429
            assert answer["code"] == "Overloaded"
            assert "tenant/hog has 2 calls in flight, its limit per channel" in answer["message"]
            status, answer = await _post(meter.http_url + GENERATE, SMALL, AUTH)
            assert status == 200, answer
            for r in streams:
                r.release()
    finally:
        meter.stop()


async def test_a_body_that_never_finishes_gets_408_and_no_charge(triton_server, tmp_path):
    write_credits(tmp_path / "credits.json", {CREDENTIAL: (CHANNEL, 10**15)})
    meter = start_meter(triton_server, tmp_path, price=PRICE, extra_args=("--body-timeout=1",))
    try:
        status, answer = await exchange(
            meter.http_port, request(GENERATE, {**AUTH, "Content-Length": "1000"}, SMALL[:5])
        )
        assert status == 408
        assert answer["code"] == "RequestTimeout"
        assert "within 1 s" in answer["message"]
        assert list(read_charges(meter.journal)) == []
    finally:
        meter.stop()


async def test_a_50_mb_body_is_refused_with_413_under_the_default_limit(meter):
    big = b'{"text_input": "' + b"a" * (50 << 20) + b'"}'
    # Declared length: refused from the headers, before the body is read.
    reader, writer = await asyncio.open_connection("127.0.0.1", meter.http_port)
    writer.write(request("/v2/models/add/infer", {**AUTH, "Content-Length": str(len(big))}))
    status, answer = await read_response(reader)
    writer.close()
    assert status == 413
    assert answer["code"] == "RequestTooLarge"
    assert f"larger than {16 << 20} bytes" in answer["message"]
    # Chunked, length unknown: refused once the limit is passed.

    async def chunks():
        for i in range(0, len(big), 1 << 20):
            yield big[i:i + (1 << 20)]

    status, answer = await _post(meter.http_url + GENERATE, chunks(), AUTH)
    assert status == 413
    assert f"larger than {4 << 20} bytes" in answer["message"]
    # A gzip bomb: 50 MB that compresses to 50 KB is measured decompressed.
    bomb = gzip.compress(big)
    status, answer = await _post(meter.http_url + GENERATE, bomb,
                                 {**AUTH, "Content-Encoding": "gzip"})
    assert len(bomb) < 1 << 20
    assert status == 413
    assert list(read_charges(meter.journal)) == []


async def test_a_compressed_body_within_the_limit_is_served(meter):
    status, answer = await _post(meter.http_url + GENERATE, gzip.compress(SMALL),
                                 {**AUTH, "Content-Encoding": "gzip"})
    assert status == 200, answer
    assert answer["text_output"]
