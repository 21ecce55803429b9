"""The fee ledger the controller keeps in the channel's status, against the real chain emulator:
exact money identities with every fee read from the chain, each transaction counted once across
crashes, and the reconciliation naming a figure someone changed."""

from __future__ import annotations

import copy
from typing import Any

import kopf
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from cocoon.api.paymentchannel import PaymentChannelStatus
from cocoon.controllers import channel_chain, channel_ledger, paymentchannel
from cocoon.kube import PAYMENT_CHANNELS
from cocoon.ton import emulator, ledger_cli
from cocoon.ton.chain import ChainError, TxInfo
from cocoon.ton.toncenter import ToncenterChain
from cocoon.ton.tvm import Address
from cocoon.ton.units import TON

from .conftest import NS, Env
from .test_channel_lifecycle import signed_report

pytestmark = pytest.mark.chain
Client = TestClient[web.Request, web.Application]


def figures(status: dict[str, Any]) -> dict[str, int]:
    book = status["ledger"]
    return {k: int(v) for k, v in book.items() if k not in ("lastHash", "entries")}


async def received_by(env: Env, wallet: Address, source: Address) -> tuple[int, int]:
    """What `wallet`'s transactions from `source` brought in, and the fees they cost it."""
    txs: list[TxInfo] = await env.chain.transactions(wallet, 64)
    mine = [t for t in txs if t.in_source is not None and t.in_source == source]
    return sum(t.in_value for t in mine), sum(t.total_fees for t in mine)


async def test_the_ledger_balances_to_the_nanoton_through_a_whole_lifecycle(
    env: Env, api: Client
) -> None:
    env.add_channel()
    await env.reconcile()
    status = await env.status()
    assert [e["kind"] for e in status["ledger"]["entries"]] == ["deploy"]
    assert int(status["ledger"]["fundingFees"]) > 0, "the payer wallet's send fee is counted"

    await api.post("/usage/v1/reports", json=signed_report(env.meter_key, TON // 4, 1))
    await env.reconcile()
    await env.kube.patch(PAYMENT_CHANNELS, "ch", {"spec": {"deposit": str(3 * TON)}}, NS)
    await env.reconcile()
    await api.post("/usage/v1/reports", json=signed_report(env.meter_key, TON // 3, 2))
    payer_before = await env.balance(env.payer)
    with pytest.raises(kopf.TemporaryError):
        await paymentchannel.finalize(NS, "ch", {}, env.memo)
    await emulator.travel(env.url, 61)
    await paymentchannel.finalize(NS, "ch", {}, env.memo)

    status = await env.status()
    book = figures(status)
    address = Address(status["address"])
    assert [e["kind"] for e in status["ledger"]["entries"]] == [
        "deploy", "claim", "topup", "claim", "close", "withdraw"
    ]
    owed, claimed = int(status["owed"]), int(status["claimed"])
    assert owed == claimed + 0 == book["claimed"] == TON // 3, "owed = claimed + unclaimed (0)"
    assert book["feesPaid"] == book["channelFees"] + book["fundingFees"]
    # the payee: claimed less the claim charges the contract withheld, less its own wallet's
    # fees to receive the payouts (both read from the chain)
    paid, payee_fees = await received_by(env, env.payee, address)
    assert paid == book["paidOut"] == claimed - book["claimCharges"]
    assert await env.balance(env.payee) == claimed - book["claimCharges"] - payee_fees
    # the payer: deposits less claimed less the channel's fees the payee did not bear
    refund, payer_fees = await received_by(env, env.payer, address)
    assert refund == book["refunded"] == (
        book["deposits"] - claimed - (book["channelFees"] - book["claimCharges"])
    )
    assert await env.balance(env.payer) - payer_before == refund - payer_fees
    assert await env.balance(address) == 0

    report = await ledger_cli.report(
        env.chain, address, PaymentChannelStatus.model_validate(status), managed=True
    )
    assert report["ok"], report["mismatches"]


async def test_a_crash_before_or_after_the_status_write_counts_each_fee_once(
    env: Env, api: Client
) -> None:
    env.add_channel()
    await env.reconcile()
    await api.post("/usage/v1/reports", json=signed_report(env.meter_key, TON // 4, 1))
    await env.reconcile()
    status = PaymentChannelStatus.model_validate(await env.status())
    assert status.ledger is not None
    config = channel_chain.config_of(status)
    assert config is not None
    # after the write: the next pass reads the same transactions and finds nothing new
    assert await channel_ledger.record(env.chain, config, status.ledger) is None
    # before the write (the ledger lost): folding again from nothing gives the same figures
    assert await channel_ledger.record(env.chain, config, None) == status.ledger.to_api()
    # a new process folds on top of what was persisted, never recounting it
    env.restart()
    before = (await env.status())["ledger"]
    await env.reconcile()
    assert (await env.status())["ledger"] == before


async def test_the_reconciliation_names_the_figure_that_was_changed(
    env: Env, api: Client
) -> None:
    env.add_channel()
    await env.reconcile()
    await api.post("/usage/v1/reports", json=signed_report(env.meter_key, TON // 4, 1))
    await env.reconcile()
    status = await env.status()
    address = Address(status["address"])
    clean = await ledger_cli.report(
        env.chain, address, PaymentChannelStatus.model_validate(status), managed=True
    )
    assert clean["ok"] and clean["status"]["unclaimed"] == "0"
    assert "every figure agrees" in ledger_cli.table(clean)

    for path, figure in (
        (("ledger", "channelFees"), "ledger.channel_fees"),
        (("ledger", "deposits"), "ledger.deposits"),
        (("claimed",), "claimed"),
    ):
        tampered = copy.deepcopy(status)
        target = tampered
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = str(int(target[path[-1]]) + 1)
        report = await ledger_cli.report(
            env.chain, address, PaymentChannelStatus.model_validate(tampered), managed=True
        )
        assert not report["ok"]
        assert figure in [m["figure"] for m in report["mismatches"]], report["mismatches"]
        assert f"MISMATCH {figure}" in ledger_cli.table(report)


class _HistoryDown(ToncenterChain):
    """The chain answers everything but the transaction history."""

    async def transactions(
        self, address: Address, limit: int = 16, start: tuple[int, bytes] | None = None
    ) -> list[TxInfo]:
        raise ChainError("getTransactions: 503")


async def test_an_unreadable_history_leaves_the_ledger_at_its_watermark(
    env: Env, api: Client
) -> None:
    env.add_channel()
    await env.reconcile()
    status = PaymentChannelStatus.model_validate(await env.status())
    config = channel_chain.config_of(status)
    assert config is not None and status.ledger is not None
    async with _HistoryDown(env.url) as down:
        assert await channel_ledger.record(down, config, status.ledger) is None
    # and the next pass that can read it catches up on everything it missed
    await api.post("/usage/v1/reports", json=signed_report(env.meter_key, TON // 4, 1))
    await env.reconcile()
    assert [e["kind"] for e in (await env.status())["ledger"]["entries"]] == ["deploy", "claim"]
