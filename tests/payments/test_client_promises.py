"""Client signing driven by receipts: the payer promises what its verified receipts add up to,
never what the operator says is owed, and the operator's claim pays exactly that.

Real chain emulator, the real usage and promise routes, the real receipt store."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cocoon import keys
from cocoon.api.paymentchannel import PaymentChannelStatus
from cocoon.client import promises
from cocoon.client.store import ReceiptStore
from cocoon.controllers import channel_chain
from cocoon.kube import PAYMENT_CHANNELS
from cocoon.meter import receipts
from cocoon.ton.client import PaymentChannel
from cocoon.ton.units import TON
from cocoon.ton.wallet import Wallet

from .conftest import NS, POOL, Env
from .test_channel_lifecycle import signed_report

Client = TestClient[web.Request, web.Application]


def receipt(meter: Ed25519PrivateKey, cost: int, cumulative: int) -> receipts.SignedReceipt:
    return receipts.issue(
        meter, keys.public_bytes(meter).hex(), request_id=secrets.token_hex(16),
        pool=f"{NS}/{POOL}", channel=f"{NS}/ch", model="llm", endpoint="generate",
        outcome="ok", request_sha256="00" * 32, response_sha256="11" * 32,
        units={"requests": 1, "outputTokens": cost}, price={"perOutputToken": "1"},
        cost_nanoton=cost, cumulative_nanoton=cumulative,
    )


async def open_client_channel(env: Env) -> dict[str, Any]:
    env.add_channel(
        payer={"signing": "Client", "publicKey": keys.public_bytes(env.payer_key).hex()}
    )
    await env.reconcile()
    status = PaymentChannelStatus.model_validate(await env.status())
    config = channel_chain.config_of(status)
    assert config is not None
    await PaymentChannel(env.chain, config).deploy(Wallet(env.chain, env.payer_key), 2 * TON)
    await env.reconcile()
    body = await env.kube.get(PAYMENT_CHANNELS, "ch", NS)
    assert body["status"]["state"] == "Open"
    return body


async def test_the_payer_promises_its_receipts_and_the_claim_pays_that(
    env: Env, api: Client, tmp_path: Path
) -> None:
    await open_client_channel(env)
    # the meter reports more than the caller holds receipts for (say, a lost response)
    owed = 7 * TON // 100
    answer = await api.post("/usage/v1/reports", json=signed_report(env.meter_key, owed, 3))
    assert answer.status == 200, await answer.text()

    store = ReceiptStore(tmp_path / "receipts.db")
    attested = keys.public_bytes(env.meter_key)
    step = 2 * TON // 100
    for i in range(1, 4):
        store.add(receipt(env.meter_key, step, i * step), attested, "https://meter")
    terms = promises.ChannelTerms.from_channel(await env.kube.get(PAYMENT_CHANNELS, "ch", NS))
    amount = promises.next_promise(store.verify(terms.ref), terms)
    assert amount == 3 * step < owed, "the receipts, not the operator's figure"

    promise = promises.sign(env.payer_key, terms, amount)
    await asyncio.to_thread(promises.submit, str(api.make_url("")), terms, promise)
    await env.reconcile()
    status = await env.status()
    assert status["latestPromise"]["cumulative"] == str(amount)
    assert status["claimed"] == str(amount), "the operator claims the payer's promise"

    # nothing new: nothing to sign; a receipt that does not verify backs no promise at all
    terms = promises.ChannelTerms.from_channel(await env.kube.get(PAYMENT_CHANNELS, "ch", NS))
    assert promises.next_promise(store.verify(terms.ref), terms) is None
    forged = receipt(keys.generate(), 5 * TON, 5 * TON + 3 * step)
    store.add(forged, attested, "https://meter")  # stored as if the attested key signed it
    with pytest.raises(promises.PromiseError, match="do not verify"):
        promises.next_promise(store.verify(terms.ref), terms)
    store.close()


async def test_a_promise_is_capped_at_the_deposit_and_needs_the_payer_key(
    env: Env, tmp_path: Path
) -> None:
    body = await open_client_channel(env)
    terms = promises.ChannelTerms.from_channel(body)
    store = ReceiptStore(tmp_path / "receipts.db")
    store.add(receipt(env.meter_key, 50 * TON, 50 * TON), keys.public_bytes(env.meter_key), "x")
    assert promises.next_promise(store.verify(terms.ref), terms) == terms.deposited
    with pytest.raises(promises.PromiseError, match="not the payer key"):
        promises.sign(keys.generate(), terms, 1)
    store.close()
