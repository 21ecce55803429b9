"""No content anywhere but the response; nothing served is lost or double counted on SIGKILL."""

import asyncio
import signal

import aiohttp
import grpc
import pytest
from conftest import AUTH, CHANNEL, CREDENTIAL, PRICE, get_text
from test_grpc_proxy import _tokens_request
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from cocoon import keys
from cocoon.meter.admin import usage_reports
from cocoon.meter.journal import Journal, read_charges
from cocoon.meter.process import start_meter, write_credits

pytestmark = pytest.mark.triton
CANARY = "zebracanary7731"


async def test_canary_prompt_never_leaves_the_response(meter):
    prompt = f"{CANARY} secret words"
    seen_in_response = False
    async with aiohttp.ClientSession() as s:
        for path, body in (
            ("generate", {"text_input": prompt, "max_tokens": 1}),
            ("generate", {"text_input": prompt, "max_tokens": 3}),
            ("generate_stream", {"text_input": prompt, "max_tokens": 4}),
        ):
            async with s.post(f"{meter.http_url}/v2/models/tokens/{path}", json=body,
                              headers=AUTH) as r:
                seen_in_response |= CANARY in (await r.text())
                assert all(CANARY not in v for v in r.headers.values())
    assert seen_in_response  # the model echoes the prompt, so the test can fail
    with grpc.insecure_channel(meter.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        responses = stub.ModelStreamInfer(
            iter([_tokens_request(prompt, 3)]),
            metadata=(("authorization", f"Bearer {CREDENTIAL}"),),
        )
        messages = list(responses)
        assert any(CANARY.encode() in m.SerializeToString() for m in messages)
        assert all(CANARY not in str(v) for _, v in responses.trailing_metadata())
    assert CANARY not in await get_text(f"{meter.admin_url}/metrics")
    log = meter.log_text()
    assert '"level": "debug"' in log  # the meter really logged at DEBUG
    assert CANARY not in log
    for path in meter.journal.parent.glob("journal.db*"):
        assert CANARY.encode() not in path.read_bytes()


@pytest.mark.parametrize("sync", ["full", "batch:200"])
async def test_sigkill_under_load_loses_nothing_served_and_counts_nothing_twice(
    triton_server, tmp_path, sync
):
    """Default mode fsyncs before answering; batch mode answers once the OS has the row (a
    200 ms fsync interval, far longer than the run's calls): kill -9 loses nothing in either."""
    write_credits(tmp_path / "credits.json", {CREDENTIAL: (CHANNEL, 10**18)})
    meter = start_meter(triton_server, tmp_path, price=PRICE,
                        extra_args=(f"--journal-sync={sync}",))
    received: list[str] = []
    enough = asyncio.Event()
    body = {"text_input": "a b", "max_tokens": 1}

    async def client(session: aiohttp.ClientSession) -> None:
        while True:
            try:
                async with session.post(f"{meter.http_url}/v2/models/tokens/generate",
                                        json=body, headers=AUTH) as r:
                    await r.read()
                    if r.status == 200:
                        received.append(r.headers["Cocoon-Request-Id"])
                        if len(received) >= 300:
                            enough.set()
            except aiohttp.ClientError:
                return

    async with aiohttp.ClientSession() as session:
        clients = [asyncio.create_task(client(session)) for _ in range(8)]
        await asyncio.wait_for(enough.wait(), 60)
        meter.stop(signal.SIGKILL)
        await asyncio.wait_for(asyncio.gather(*clients), 30)
    served = set(received)
    assert len(served) == len(received)

    restarted = start_meter(triton_server, tmp_path, price=PRICE)
    try:
        charges = list(read_charges(restarted.journal))
        ids = [c.request_id for c in charges]
        assert len(ids) == len(set(ids))
        assert served <= set(ids)  # every response the clients got is journaled
        assert len(ids) <= len(served) + 8  # at most the calls in flight at the kill
    finally:
        restarted.stop()
    journal = Journal(restarted.journal)  # the totals a restarted meter reports from
    try:
        (report,) = [r.report for r in usage_reports(journal, "tenant/pool", keys.generate())]
        assert report.units.requests == len(charges)
        assert int(report.cost_nanoton) == sum(c.cost_nanoton for c in charges)
    finally:
        journal.close()
