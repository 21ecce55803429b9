"""A meter that is stopped (SIGTERM, as the kubelet does) reports its final totals before it
exits: the real meter process in front of real Triton, an operator stand-in that records
reports, and a report interval so long that only the final report can carry the call."""

import asyncio
import signal

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import AUTH, CHANNEL, CREDENTIAL, PRICE

from cocoon.meter.credits import credential_hash
from cocoon.meter.journal import read_charges
from cocoon.meter.process import start_meter
from cocoon.meter.usage_report import verify

pytestmark = pytest.mark.triton


async def test_sigterm_sends_the_final_report(triton_server, tmp_path):
    reports: list[dict] = []

    async def credit(_: web.Request) -> web.Response:
        return web.json_response({"channels": [{
            "channel": CHANNEL, "credentialSha256": credential_hash(CREDENTIAL),
            "creditLimitNanoton": str(10**15)}]})

    async def report(request: web.Request) -> web.Response:
        reports.append(await request.json())
        return web.json_response({"accepted": True})

    app = web.Application()
    app.router.add_get("/usage/v1/credit/{tail:.*}", credit)
    app.router.add_post("/usage/v1/reports", report)
    async with TestServer(app, host="127.0.0.1") as operator:
        meter = await asyncio.to_thread(
            start_meter, triton_server, tmp_path, price=PRICE,
            operator_url=str(operator.make_url("")).rstrip("/"),
            extra_args=("--report-interval=3600",),
        )
        try:
            body = {"inputs": [
                {"name": n, "shape": [16], "datatype": "FP32", "data": [1.0] * 16}
                for n in ("INPUT0", "INPUT1")
            ]}
            for _ in range(100):  # the first credit poll is in flight at start
                async with aiohttp.ClientSession() as s, s.post(
                    f"{meter.http_url}/v2/models/add/infer", json=body, headers=AUTH
                ) as r:
                    status = r.status
                    cost = r.headers.get("Cocoon-Cost-Nanoton")
                if status != 401:
                    break
                await asyncio.sleep(0.1)
            assert status == 200 and cost is not None
            await asyncio.sleep(0)  # nothing else may report: the interval is an hour
            sent_before_stop = len(reports)
            meter.process.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(meter.process.wait, 30) == 0
        finally:
            meter.stop()
    charged = sum(c.cost_nanoton for c in read_charges(meter.journal))
    assert charged == int(cost)
    final = verify(reports[-1])
    assert final.channel == CHANNEL and int(final.cost_nanoton) == charged
    assert len(reports) > sent_before_stop, "the final report was sent at stop"
