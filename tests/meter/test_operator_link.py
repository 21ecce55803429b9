"""The meter's usage pusher against an operator that says a channel is gone (410) or asks
for a pause (429)."""

import time

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from cocoon import keys
from cocoon.meter.journal import Charge, Journal
from cocoon.meter.operator_link import UsagePusher
from cocoon.meter.pricing import Units


async def test_a_restarted_meter_stops_resending_reports_for_a_deleted_channel(tmp_path):
    received: list[str] = []

    async def reports(request: web.Request) -> web.Response:
        channel = (await request.json())["report"]["channel"]
        received.append(channel)
        if channel == "ns/deleted":
            return web.json_response({"error": {"reason": "UnknownChannel"}}, status=410)
        return web.json_response({"error": {"reason": "Conflict"}}, status=409)

    app = web.Application()
    app.router.add_post("/usage/v1/reports", reports)
    journal = Journal(tmp_path / "journal.db")
    now = time.time()
    for i, channel in enumerate(("ns/deleted", "ns/busy")):
        await journal.append(Charge(f"r{i}", channel, "m", "infer", "ok", Units(1, 0, 0), 10,
                                    now, now))
    async with TestServer(app) as server, aiohttp.ClientSession() as session:
        pusher = UsagePusher(str(server.make_url("/")), journal, "ns/pool", keys.generate())
        for _ in range(3):
            await pusher.push_once(session)
    journal.close()
    assert received.count("ns/deleted") == 1, received
    assert received.count("ns/busy") == 3  # other refusals are still retried


async def test_the_pusher_pauses_its_round_when_the_operator_says_429(tmp_path):
    received: list[str] = []

    async def reports(request: web.Request) -> web.Response:
        received.append((await request.json())["report"]["channel"])
        return web.json_response({"error": {"reason": "TooManyRequests"}}, status=429,
                                 headers={"Retry-After": "1"})

    app = web.Application()
    app.router.add_post("/usage/v1/reports", reports)
    journal = Journal(tmp_path / "journal.db")
    now = time.time()
    for i, channel in enumerate(("ns/a", "ns/b", "ns/c")):
        await journal.append(Charge(f"r{i}", channel, "m", "infer", "ok", Units(1, 0, 0), 10,
                                    now, now))
    async with TestServer(app) as server, aiohttp.ClientSession() as session:
        pusher = UsagePusher(str(server.make_url("/")), journal, "ns/pool", keys.generate())
        assert await pusher.push_once(session) == 0
        assert await pusher.push_once(session) == 0
    journal.close()
    assert received == ["ns/a", "ns/a"]  # nothing more in a round the operator asked to pause
