"""Crash at each step of the controller, restart from what was persisted, check the chain:
never a second deploy, never a double claim, never lost usage."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from cocoon.ton.accounting import CLAIM_GAS_CHARGE
from cocoon.ton.client import PaymentChannel
from cocoon.ton.tvm import Address
from cocoon.ton.units import TON

from .conftest import Env
from .test_channel_lifecycle import signed_report

pytestmark = pytest.mark.chain
Client = TestClient[web.Request, web.Application]


class Crash(Exception):
    """The operator process dying at this point."""


def crash_after(monkeypatch: pytest.MonkeyPatch, method: str) -> list[Any]:
    """PaymentChannel.<method> runs (its transaction lands on chain), then the process dies."""
    original: Callable[..., Any] = getattr(PaymentChannel, method)
    results: list[Any] = []

    async def dying(self: PaymentChannel, *args: Any) -> Any:
        results.append(await original(self, *args))
        raise Crash(method)

    monkeypatch.setattr(PaymentChannel, method, dying)
    return results


def crash_before(monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    async def dying(self: PaymentChannel, *args: Any) -> Any:
        raise Crash(method)

    monkeypatch.setattr(PaymentChannel, method, dying)


async def sends_to(env: Env, sender: Address, dest: Address) -> int:
    txs = await env.chain.transactions(sender, limit=64)
    return sum(1 for tx in txs for d, _ in tx.out_values if d == dest)


async def channel_address(env: Env) -> Address:
    return Address((await env.status())["address"])


async def test_crash_after_deploy_before_status_never_deploys_twice(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.add_channel()
    landed = crash_after(monkeypatch, "deploy")
    with pytest.raises(Crash):
        await env.reconcile()
    assert landed and landed[0].success
    persisted = await env.status()
    assert persisted["channelId"] and "lastTransaction" not in persisted

    monkeypatch.undo()
    env.restart()
    await env.reconcile()
    status = await env.status()
    assert status["channelId"] == persisted["channelId"], "the same channel, not a new id"
    assert status["state"] == "Open"
    assert await sends_to(env, env.payer, await channel_address(env)) == 1
    assert 2 * TON <= int(status["deposited"]) < 2 * TON + TON // 50


async def test_crash_before_deploy_keeps_the_persisted_id(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.add_channel()
    crash_before(monkeypatch, "deploy")
    with pytest.raises(Crash):
        await env.reconcile()
    chosen = (await env.status())["channelId"]
    monkeypatch.undo()
    env.restart()
    await env.reconcile()
    assert (await env.status())["channelId"] == chosen
    assert await sends_to(env, env.payer, await channel_address(env)) == 1


async def test_crash_after_persisting_the_promise_claims_it_once(
    env: Env, api: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.add_channel()
    await env.reconcile()
    await api.post("/usage/v1/reports", json=signed_report(env.meter_key, TON // 4, 1))
    crash_before(monkeypatch, "claim")
    with pytest.raises(Crash):
        await env.reconcile()
    status = await env.status()
    assert status["latestPromise"]["cumulative"] == str(TON // 4), "persisted before use"

    monkeypatch.undo()
    env.restart()
    payee_before = await env.balance(env.payee)
    await env.reconcile()
    await env.reconcile()
    status = await env.status()
    assert status["claimed"] == str(TON // 4)
    received = await env.balance(env.payee) - payee_before
    assert TON // 4 - CLAIM_GAS_CHARGE - TON // 1000 < received < TON // 4 - CLAIM_GAS_CHARGE


async def test_crash_after_the_claim_lands_never_claims_twice(
    env: Env, api: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.add_channel()
    await env.reconcile()
    await api.post("/usage/v1/reports", json=signed_report(env.meter_key, TON // 4, 1))
    payee_before = await env.balance(env.payee)
    landed = crash_after(monkeypatch, "claim")
    with pytest.raises(Crash):
        await env.reconcile()
    assert landed and landed[0] is not None
    after_one = await env.balance(env.payee)
    assert "lastClaimAt" not in await env.status()

    channel_txs = len(await env.chain.transactions(await channel_address(env), limit=64))

    monkeypatch.undo()
    env.restart()
    await env.reconcile()
    await env.reconcile()
    status = await env.status()
    assert status["claimed"] == str(TON // 4)
    assert await env.balance(env.payee) == after_one > payee_before, "no second payout"
    assert len(await env.chain.transactions(await channel_address(env), limit=64)) == channel_txs


async def test_usage_survives_a_restart_and_is_settled(
    env: Env, api: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.add_channel()
    await env.reconcile()
    await api.post("/usage/v1/reports", json=signed_report(env.meter_key, TON // 3, 7))
    crash_before(monkeypatch, "claim")
    with pytest.raises(Crash):
        await env.reconcile()
    monkeypatch.undo()
    env.restart()
    # the meter re-sends its latest report after the restart: idempotent
    again = await api.post("/usage/v1/reports", json=signed_report(env.meter_key, TON // 3, 7))
    assert again.status == 200
    await env.reconcile()
    status = await env.status()
    assert (status["owed"], status["promised"], status["claimed"]) == (str(TON // 3),) * 3
