"""Status that tells the truth about the chain, against real chain emulators: a stopped chain
flips `ChainReachable` on exactly the channels that use it, in one probe pass, and flips it back
when the chain answers again; `Funded` always states the target deposit in force."""

from __future__ import annotations

import asyncio
import socket
from typing import Any
from urllib.parse import urlparse

import pytest

from cocoon.controllers import (
    chainprobe,
    channel_conditions,
    channel_secrets,
    loops,
    paymentchannel,
)
from cocoon.kube import PAYMENT_CHANNELS
from cocoon.ton import emulator, networks
from cocoon.ton.units import TON

from .conftest import NS, Env

pytestmark = pytest.mark.chain
PROBE = loops.Schedule("chains", interval_s=1, timeout_s=3, concurrency=2)


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status.get("conditions", []) if c["type"] == type_)


def on_chain(env: Env, url: str) -> dict[str, Any]:
    """The spec fragment that puts a channel on the chain at `url`: the provider offers it as
    a network of its own (a tenant only ever names one)."""
    name = f"chain-{urlparse(url).port}"
    catalog = env.memo.payments.catalog
    if name not in catalog.names():
        catalog.networks.append(networks.Network(name=name, kind=networks.NetworkKind.EMULATOR,
                                                 url=url))
    return {"network": name}


async def version(env: Env, name: str) -> str:
    body = await env.kube.get(PAYMENT_CHANNELS, name, NS)
    return str(body["metadata"]["resourceVersion"])


async def test_a_stopped_chain_degrades_only_its_channels_and_recovers(env: Env) -> None:
    other = emulator.start()
    port = urlparse(other.url).port
    try:
        await emulator.faucet(other.url, env.payer, 10 * TON)
        env.add_channel("live")  # on the session's emulator (the operator's default chain)
        env.add_channel("dead-a", **on_chain(env, other.url))
        env.add_channel("dead-b", **on_chain(env, other.url))
        for name in ("live", "dead-a", "dead-b"):
            await env.reconcile(name)
            assert condition(await env.status(name), "ChainReachable")["status"] == "True"
        before = [await version(env, n) for n in ("live", "dead-a", "dead-b")]
        await chainprobe.resync(env.memo, PROBE)
        after = [await version(env, n) for n in ("live", "dead-a", "dead-b")]
        assert after == before, "probes of answering chains write nothing"
        untouched = after[0]
    finally:
        other.stop()

    await chainprobe.resync(env.memo, PROBE)  # one pass is the bound
    for name in ("dead-a", "dead-b"):
        status = await env.status(name)
        reachable = condition(status, "ChainReachable")
        assert (reachable["status"], reachable["reason"]) == ("False", "ChainUnreachable")
        assert "did not answer a probe" in reachable["message"]
        assert condition(status, "Ready")["reason"] == "ChainUnreachable"
        funded = condition(status, "Funded")
        assert funded["status"] == "True" and f"(target {2 * TON})" in funded["message"]
    assert await version(env, "live") == untouched, "the answering chain's channel is not written"
    assert condition(await env.status("live"), "Ready")["status"] == "True"
    assert any(e["reason"] == "ChainUnreachable" for e in env.kube.events)

    settled = await version(env, "dead-a")
    await chainprobe.resync(env.memo, PROBE)
    assert await version(env, "dead-a") == settled, "a verdict that holds is not rewritten"

    # the chain answers again (a fresh emulator on the same address): back to True at once
    with emulator.start(port=port or 0):
        env.memo.leading = lambda: False  # no follow-up reconcile here: the flip is the probe's
        await chainprobe.resync(env.memo, PROBE)
        reachable = condition(await env.status("dead-a"), "ChainReachable")
        assert (reachable["status"], reachable["reason"]) == ("True", "Reachable")


async def test_a_black_hole_is_unreachable_within_the_probe_deadline(env: Env) -> None:
    hole = socket.create_server(("127.0.0.1", 0))  # accepts (backlog), never answers
    try:
        env.add_channel("ch", **on_chain(env, f"http://127.0.0.1:{hole.getsockname()[1]}"))
        await chainprobe.resync(env.memo, PROBE)
    finally:
        hole.close()
    reachable = condition(await env.status(), "ChainReachable")
    assert (reachable["status"], reachable["reason"]) == ("False", "ChainUnreachable")
    assert "no answer within 3 s" in reachable["message"]


async def test_funded_states_the_target_in_force_when_the_top_up_cannot_happen(env: Env) -> None:
    env.add_channel()
    await env.reconcile()
    assert f"(target {2 * TON})" in condition(await env.status(), "Funded")["message"]

    # the tenant raises the deposit beyond what the payer's wallet holds: no top-up can happen
    body = await env.kube.get(PAYMENT_CHANNELS, "ch", NS)
    env.kube.put(PAYMENT_CHANNELS, {**body, "spec": {**body["spec"], "deposit": str(500 * TON)}})
    with pytest.raises(channel_secrets.Blocked):
        await env.reconcile()
    status = await env.status()
    assert condition(status, "Ready")["reason"] == "PayerWalletUnderfunded"
    funded = condition(status, "Funded")
    assert (funded["status"], funded["reason"]) == ("False", "BelowDeposit")
    assert f"below the target {500 * TON}" in funded["message"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"spec": {}}, ""),
        ({"spec": {"network": "main"}}, "main"),
        # once prepared, the network pinned in status is the one probed
        ({"spec": {"network": "main"}, "status": {"network": "main"}}, "main"),
        ({"spec": {}, "status": {"network": "default"}}, "default"),
    ],
)
def test_channels_are_probed_per_provider_network(body: dict[str, Any], expected: str) -> None:
    assert chainprobe.network_name(body) == expected


async def test_dead_endpoints_hold_only_their_own_channels(env: Env) -> None:
    """Three channels on an endpoint that accepts and never answers, one on a live chain: in the
    same channels pass the live one opens while the dead ones are still held (each holds one
    slot until its own deadline), and the probe marks only the dead ones."""
    hole = socket.create_server(("127.0.0.1", 0), backlog=16)
    held = loops.Schedule("channels", interval_s=1, timeout_s=60, concurrency=4)
    try:
        dead = f"http://127.0.0.1:{hole.getsockname()[1]}"
        for i in range(3):
            env.add_channel(f"dead-{i}", **on_chain(env, dead))
        env.add_channel("live")
        one_pass = asyncio.create_task(paymentchannel.resync(env.memo, held))
        async with asyncio.timeout(held.timeout_s - 10):  # before any dead channel's deadline
            while (await env.status("live")).get("state") != "Open":  # noqa: ASYNC110 - no watch
                await asyncio.sleep(0.2)
        assert not one_pass.done(), "the dead channels are still held"
        await chainprobe.resync(env.memo, PROBE)
        one_pass.cancel()
        await asyncio.gather(one_pass, return_exceptions=True)
    finally:
        hole.close()
    assert condition(await env.status("live"), "ChainReachable")["status"] == "True"
    for i in range(3):
        reachable = condition(await env.status(f"dead-{i}"), "ChainReachable")
        assert (reachable["status"], reachable["reason"]) == ("False", "ChainUnreachable")


@pytest.mark.parametrize(
    ("status", "said"),
    [
        ({}, ""),
        ({"owed": "0", "claimed": "0"}, ""),
        ({"owed": "250", "claimed": "250"}, ""),
        ({"owed": "250"}, " 250 nanoton of accepted usage wait to be claimed."),
        ({"owed": "250", "claimed": "100"}, " 150 nanoton of accepted usage wait to be claimed."),
    ],
)
def test_an_unreachable_chain_says_what_usage_waits_to_be_claimed(
    status: dict[str, Any], said: str
) -> None:
    assert channel_conditions.awaiting_claim(status) == said
