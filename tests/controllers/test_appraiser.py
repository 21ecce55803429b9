"""Appraisal runs off the event loop: during a burst of real appraisals the Lease keeps being
renewed and the HTTP API answers; a full queue refuses at once and counts the refusal."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from cocoon.attestation import appraisal, encoding
from cocoon.attestation.policy import Policy
from cocoon.controllers import appraiser as appraiser_module
from cocoon.controllers.appraiser import Appraiser, Busy
from tests.controllers.test_leader import LeaseServer, elector, until

DATA = Path(__file__).resolve().parent.parent / "data" / "attestation" / "nvgpu"
REPORT = encoding.decode_blob((DATA / "h100_535_report.hex").read_bytes())
CHAIN = (DATA / "h100_535_chain.pem").read_bytes()
POLICY = Policy.default()
GPU_AT = 1718000000
# enough real GPU appraisals (each a chain walk and a P-384 signature check) that, run inline,
# the burst would hold the loop far longer than the test elector's renew deadline
BURST = 400


def appraise_gpu() -> bool:
    return appraisal.appraise_gpu(REPORT, CHAIN, POLICY, now=GPU_AT).reason is None


def renewals(server: LeaseServer) -> int:
    assert server.lease is not None
    return int(server.lease["metadata"]["resourceVersion"])


async def test_the_lease_is_renewed_and_the_api_answers_during_a_burst() -> None:
    pool = Appraiser(workers=2, queue=BURST)
    server = LeaseServer()
    leader = elector(server, "a")
    await leader.acquire()
    keeper = asyncio.create_task(leader.keep())

    async def ping(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/ping", ping)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        before = renewals(server)
        burst = asyncio.gather(*(pool.run(appraise_gpu) for _ in range(BURST)))
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/ping") as response,
        ):
            assert response.status == 200
        assert not burst.done()  # the API answered while the burst was still being appraised
        await until(lambda: renewals(server) >= before + 2)
        assert not burst.done()  # and the Lease was renewed twice meanwhile
        assert all(await burst)
        assert leader.leading and not leader.lost.is_set()
    finally:
        keeper.cancel()
        await runner.cleanup()
        pool.close()


async def test_a_full_queue_refuses_at_once_and_frees_its_slots() -> None:
    pool = Appraiser(workers=1, queue=1)
    gate = threading.Event()
    running = [asyncio.create_task(pool.run(gate.wait, 30)) for _ in range(2)]
    await until(lambda: pool.in_flight == 2)
    refused = appraiser_module.REFUSED._value.get()
    with pytest.raises(Busy, match="appraising 2 submissions; retry"):
        await pool.run(appraise_gpu)
    assert appraiser_module.REFUSED._value.get() == refused + 1
    gate.set()
    assert await asyncio.gather(*running) == [True, True]
    await until(lambda: pool.in_flight == 0)  # slots free when the work ends
    assert await pool.run(appraise_gpu)
    pool.close()


async def test_a_cancelled_caller_keeps_its_slot_until_the_work_ends() -> None:
    pool = Appraiser(workers=1, queue=0)
    gate = threading.Event()
    task = asyncio.create_task(pool.run(gate.wait, 30))
    await until(lambda: pool.in_flight == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(Busy):  # the thread is still busy: no second appraisal beside it
        await pool.run(appraise_gpu)
    gate.set()
    await until(lambda: pool.in_flight == 0)
    assert await pool.run(appraise_gpu)
    pool.close()


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="COCOON_APPRAISAL_WORKERS"):
        Appraiser(workers=0)
