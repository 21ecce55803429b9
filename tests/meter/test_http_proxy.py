"""The meter in front of a real Triton, over HTTP."""

import asyncio
import json
import struct
import time

import aiohttp
import pytest
from conftest import AUTH, CHANNEL, POOR_CREDENTIAL, PRICE, get_text

from cocoon.meter.journal import read_charges
from cocoon.meter.pricing import Units

pytestmark = pytest.mark.triton

ADD_BODY = {"inputs": [
    {"name": "INPUT0", "shape": [16], "datatype": "FP32", "data": [1.0] * 16},
    {"name": "INPUT1", "shape": [16], "datatype": "FP32", "data": [2.0] * 16},
]}


async def _post(url, body, headers=AUTH, raw=False):
    async with aiohttp.ClientSession() as s, s.post(
        url, **({"data": body} if raw else {"json": body}), headers=headers
    ) as r:
        return r.status, r.headers, await r.read()


async def test_infer_json_is_charged_per_request(meter):
    status, headers, body = await _post(f"{meter.http_url}/v2/models/add/infer", ADD_BODY)
    assert status == 200
    assert json.loads(body)["outputs"][0]["data"] == [3.0] * 16
    assert Units.parse_header(headers["Cocoon-Units"]) == Units(1, 0, 0)
    assert headers["Cocoon-Cost-Nanoton"] == "1000"
    charges = list(read_charges(meter.journal))
    assert [c.request_id for c in charges] == [headers["Cocoon-Request-Id"]]


async def test_infer_binary_extension_passes_through_byte_for_byte(meter, triton_server):
    header = json.dumps({
        "inputs": [
            {"name": n, "shape": [16], "datatype": "FP32",
             "parameters": {"binary_data_size": 64}} for n in ("INPUT0", "INPUT1")
        ],
        "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}],
    }).encode()
    body = header + struct.pack("<16f", *range(16)) + struct.pack("<16f", *[0.5] * 16)
    hdrs = {**AUTH, "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream"}
    direct = await _post(f"{triton_server.http_url}/v2/models/add/infer", body, hdrs, raw=True)
    metered = await _post(f"{meter.http_url}/v2/models/add/infer", body, hdrs, raw=True)
    assert metered[0] == direct[0] == 200
    assert metered[2] == direct[2]
    assert metered[1]["Inference-Header-Content-Length"] == \
        direct[1]["Inference-Header-Content-Length"]
    length = int(metered[1]["Inference-Header-Content-Length"])
    assert struct.unpack("<16f", metered[2][length:]) == tuple(i + 0.5 for i in range(16))


async def test_generate_single_response_reports_usage(meter):
    status, headers, body = await _post(
        f"{meter.http_url}/v2/models/tokens/generate",
        {"text_input": "one two three", "max_tokens": 1},
    )
    assert status == 200
    assert json.loads(body)["text_output"] == "one "
    assert Units.parse_header(headers["Cocoon-Units"]) == Units(1, 3, 1)
    assert int(headers["Cocoon-Cost-Nanoton"]) == PRICE.cost(Units(1, 3, 1))


async def test_generate_on_streaming_model_quirk_becomes_400_and_free(meter):
    """Triton answers 200 with an error body; the meter says 400 and charges nothing."""
    status, headers, body = await _post(
        f"{meter.http_url}/v2/models/tokens/generate", {"text_input": "a b", "max_tokens": 3}
    )
    assert status == 400
    assert "generate stream" in json.loads(body)["error"]
    assert headers["Cocoon-Cost-Nanoton"] == "0"


def _events(body: bytes) -> list[tuple[str, dict]]:
    out = []
    for block in body.decode().split("\n\n"):
        if not block.strip():
            continue
        name = "message"
        data = ""
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
        out.append((name, json.loads(data)))
    return out


async def test_generate_stream_forwards_tokens_then_usage_event(meter):
    status, headers, body = await _post(
        f"{meter.http_url}/v2/models/tokens/generate_stream",
        {"text_input": "alpha beta", "max_tokens": 5},
    )
    assert status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    events = _events(body)
    tokens = [e for name, e in events if name == "message"]
    assert [t["text_output"] for t in tokens] == ["alpha ", "beta ", "alpha ", "beta ", "alpha "]
    # the usage event, then the signed receipt that covers every byte before it
    assert [name for name, _ in events[-2:]] == ["cocoon.usage", "cocoon.receipt"]
    usage = events[-2][1]
    assert usage["units"] == {"requests": 1, "input_tokens": 2, "output_tokens": 5,
                              "cached_input_tokens": 0, "reasoning_tokens": 0}
    assert usage["costNanoton"] == str(PRICE.cost(Units(1, 2, 5)))
    assert usage["requestId"] == headers["Cocoon-Request-Id"]


async def test_generate_stream_arrives_in_real_time(meter):
    """Each token reaches the client as Triton sends it, not when the stream ends."""
    async with aiohttp.ClientSession() as s, s.post(
        f"{meter.http_url}/v2/models/tokens/generate_stream",
        json={"text_input": "x", "max_tokens": 4, "delay_ms": 300}, headers=AUTH,
    ) as r:
        loop = asyncio.get_running_loop()
        arrivals = []
        async for chunk in r.content.iter_any():
            if b"text_output" in chunk:
                arrivals.append(loop.time())
    assert len(arrivals) >= 3
    assert arrivals[-1] - arrivals[0] > 0.5


async def test_error_mid_stream_charges_tokens_sent(meter):
    status, _, body = await _post(
        f"{meter.http_url}/v2/models/tokens/generate_stream",
        {"text_input": "a b c", "max_tokens": 6, "fail_after": 2},
    )
    assert status == 200
    events = _events(body)
    assert "injected failure" in events[-3][1]["error"]
    assert events[-2][1]["units"]["output_tokens"] == 2
    assert events[-1][0] == "cocoon.receipt"
    (charge,) = read_charges(meter.journal)
    assert (charge.outcome, charge.units.output_tokens) == ("error", 2)


async def test_client_disconnect_mid_stream_is_charged_for_what_was_sent(meter):
    async with aiohttp.ClientSession() as s, s.post(
        f"{meter.http_url}/v2/models/tokens/generate_stream",
        json={"text_input": "x", "max_tokens": 50, "delay_ms": 40}, headers=AUTH,
    ) as r:
        received = b""
        while received.count(b"\n\n") < 2:
            received += await r.content.readany()
        r.close()
    deadline = time.monotonic() + 10
    charges = []
    # the row is written while streaming; wait for the meter to notice the close and settle it
    while not (charges and charges[0].outcome != "streaming") and time.monotonic() < deadline:
        charges = list(read_charges(meter.journal))
        await asyncio.sleep(0.05)
    (charge,) = charges
    assert charge.outcome == "client_closed"
    assert 2 <= charge.units.output_tokens < 50


async def test_credentials_and_credit_are_enforced(meter):
    url = f"{meter.http_url}/v2/models/add/infer"
    status, _, body = await _post(url, ADD_BODY, headers={})
    assert status == 401
    assert json.loads(body)["code"] == "Unauthenticated"
    status, _, _ = await _post(url, ADD_BODY, headers={"Authorization": "Bearer nope"})
    assert status == 401
    poor = {"Authorization": f"Bearer {POOR_CREDENTIAL}"}
    # limit 3000, reservation 1000 + 16 * 100: one call fits, then the channel is short.
    status, _, _ = await _post(url, ADD_BODY, headers=poor)
    assert status == 200
    status, _, body = await _post(url, ADD_BODY, headers=poor)
    assert status == 402
    assert "top up" in json.loads(body)["message"]


async def test_health_and_metadata_are_open_control_is_refused(meter):
    async with aiohttp.ClientSession() as s:
        for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/add/ready", "/v2",
                     "/v2/models/add", "/v2/models/add/config", "/v2/models/add/stats"):
            async with s.get(meter.http_url + path) as r:
                assert r.status == 200, path
        # Triton's own refusal on an open route comes in the meter's documented shape
        async with s.get(meter.http_url + "/v2/models/nosuch/config") as r:
            answer = await r.json()
            assert r.status == 404 and answer["code"] == "ModelRejected", answer
            assert "nosuch" in answer["message"] and answer["error"] == answer["message"]
        async with s.post(meter.http_url + "/v2/repository/models/add/unload", headers=AUTH) as r:
            assert r.status == 403
        async with s.post(meter.http_url + "/v2/systemsharedmemory/region/x/register",
                          headers=AUTH) as r:
            assert r.status == 403


async def test_admin_port_serves_metrics_but_no_usage_listing(meter):
    """Every channel's spend goes only to the operator: the admin port has no usage route."""
    for _ in range(3):
        await _post(f"{meter.http_url}/v2/models/add/infer", ADD_BODY)
    assert len(list(read_charges(meter.journal))) == 3
    async with aiohttp.ClientSession() as s:
        for path in ("/cocoon/v1/usage", f"/cocoon/v1/usage?channel={CHANNEL}"):
            async with s.get(meter.admin_url + path) as r:
                assert r.status == 404, path
                assert CHANNEL not in await r.text()
    metrics = await get_text(f"{meter.admin_url}/metrics")
    assert 'cocoon_meter_requests_total{model="add",outcome="ok",protocol="http"} 3.0' in metrics
    assert "tenant/alpha" not in metrics


async def test_readiness_on_the_admin_port_is_tritons(meter):
    async with aiohttp.ClientSession() as s, s.get(f"{meter.admin_url}/readyz") as r:
        assert r.status == 200
    # the same check against an upstream that does not answer: not ready
    from cocoon.devstack.process import free_port
    from cocoon.meter.admin import upstream_ready

    assert await upstream_ready(f"http://127.0.0.1:{free_port()}") is False
