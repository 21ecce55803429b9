"""The PaymentChannel controller against the real chain emulator: open and fund, usage to
promise to claim, credit, top-up, close on deletion, and a chain that does not answer."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY

from cocoon import keys
from cocoon.api.paymentchannel import PaymentChannelStatus
from cocoon.controllers import channel_chain, paymentchannel, usage_api
from cocoon.controllers.channel_conditions import ABANDON_ANNOTATION
from cocoon.controllers.channel_secrets import Blocked
from cocoon.kube import ATTESTED_NODES, INFERENCE_POOLS, PAYMENT_CHANNELS, SECRETS
from cocoon.meter import usage_report
from cocoon.ton import emulator, networks
from cocoon.ton.accounting import CLAIM_GAS_CHARGE, Step
from cocoon.ton.channel import State
from cocoon.ton.tvm import raw

from .conftest import (
    NS,
    POOL,
    TON,
    Env,
    attested_node,
    credit_headers,
    journal_of,
    meter_record,
)

pytestmark = pytest.mark.chain
Client = TestClient[web.Request, web.Application]


def signed_report(
    key: Any, cost: int, seq: int, channel: str = f"{NS}/ch", pool: str = f"{NS}/{POOL}",
    journal: str | None = None,
) -> dict[str, Any]:
    report = usage_report.UsageReport(
        meter_public_key=keys.public_bytes(key).hex(),
        journal_id=journal or journal_of(key),
        pool=pool,
        channel=channel,
        units=usage_report.UsageUnits(requests=seq, input_tokens=0, output_tokens=cost),
        cost_nanoton=str(cost),
        journal_sequence=seq,
        issued_at=datetime.now(UTC),
    )
    return usage_report.sign(report, key).to_api()


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status.get("conditions", []) if c["type"] == type_)


async def token(env: Env, name: str = "ch") -> str:
    secret = await env.kube.get(SECRETS, f"{name}-credential", NS)
    return base64.b64decode(secret["data"]["token"]).decode()


async def test_open_fund_and_issue_the_credential(env: Env) -> None:
    env.add_channel()
    final = await env.reconcile()
    assert final.step is Step.NOTHING
    status = await env.status()
    assert status["state"] == "Open"
    assert int(status["deposited"]) >= 2 * TON
    assert len(status["channelId"]) == 32
    assert condition(status, "Ready")["status"] == "True"
    assert condition(status, "Funded")["status"] == "True"
    assert condition(status, "ChainReachable")["status"] == "True"
    assert status["lastTransaction"]["kind"] == "deploy"
    secret = await env.kube.get(SECRETS, "ch-credential", NS)
    assert secret["metadata"]["ownerReferences"][0]["kind"] == "PaymentChannel"
    credential = await token(env)
    assert len(base64.urlsafe_b64decode(credential + "=")) == 32
    exposed = json.dumps(status) + json.dumps(env.kube.events)
    assert credential not in exposed and status["credentialSecret"] == "ch-credential"
    told = json.dumps(status["conditions"]) + json.dumps(env.kube.events)
    assert status["credentialSha256"] not in told, "not even its hash in messages or Events"
    assert env.kube.events and env.kube.events[-1]["reason"] == "Open"

    await env.reconcile()
    assert (await env.status())["credentialSecret"] == "ch-credential"
    assert await token(env) == credential, "the credential is issued once"


async def test_usage_promise_claim_and_credit(env: Env, api: Client) -> None:
    env.add_channel()
    await env.reconcile()
    payee_before = await env.balance(env.payee)

    first = await api.post("/usage/v1/reports", json=signed_report(env.meter_key, TON // 4, 3))
    assert first.status == 200, await first.text()
    assert (await first.json())["owed"] == str(TON // 4)
    assert env.changed == [(NS, "ch")], "a report schedules a reconcile"
    again = await api.post("/usage/v1/reports", json=signed_report(env.meter_key, TON // 4, 3))
    assert again.status == 200
    older = await api.post("/usage/v1/reports", json=signed_report(env.meter_key, TON // 8, 2))
    assert older.status == 200
    assert (await env.status())["owed"] == str(TON // 4), "re-sent and late reports are no-ops"

    await env.reconcile()
    status = await env.status()
    assert status["latestPromise"]["cumulative"] == str(TON // 4)
    assert status["promised"] == str(TON // 4)
    # never claimed before: the interval counts as elapsed, so the first promise is claimed
    assert status["claimed"] == str(TON // 4)
    assert status["lastTransaction"]["kind"] == "claim"
    assert REGISTRY.get_sample_value(
        "cocoon_channel_operations_total", {"operation": "Claim", "result": "ok"}
    ), "claims are counted for the claims-failing alert to compare against"
    # the payee gets the delta less the claim's flat gas charge and the payout's forward fee
    received = await env.balance(env.payee) - payee_before
    assert TON // 4 - CLAIM_GAS_CHARGE - TON // 1000 < received < TON // 4 - CLAIM_GAS_CHARGE

    # the meter's credit: its own cost plus what is left of min(deposit, promise + window)
    credit = await api.get(f"/usage/v1/credit/{NS}/{POOL}", headers=credit_headers(env.meter_key))
    assert credit.status == 200
    [entry] = (await credit.json())["channels"]
    assert entry["channel"] == f"{NS}/ch"
    assert entry["credentialSha256"] == hashlib.sha256((await token(env)).encode()).hexdigest()
    assert int(entry["creditLimitNanoton"]) == TON // 4 + TON // 2
    assert status["creditLeft"] == str(TON // 2)

    # below the threshold and inside the interval: a new promise, no claim yet
    await api.post("/usage/v1/reports", json=signed_report(env.meter_key, TON // 2, 5))
    await env.reconcile()
    status = await env.status()
    assert (status["promised"], status["claimed"]) == (str(TON // 2), str(TON // 4))


async def test_reports_from_unregistered_keys_are_refused_and_write_nothing(
    env: Env, api: Client
) -> None:
    env.add_channel()
    await env.reconcile()
    writes = env.kube.status_writes
    stranger = keys.generate()
    before = usage_api.REJECTED.labels(reason="unattested")._value.get()
    refused = await api.post("/usage/v1/reports", json=signed_report(stranger, TON, 1))
    assert refused.status == 403
    assert (await refused.json())["error"]["reason"] == "Unattested"
    assert usage_api.REJECTED.labels(reason="unattested")._value.get() == before + 1

    # the key of a Verified node is not a meter: only registered meter keys report
    env.kube.put(ATTESTED_NODES, attested_node("gpu-9", stranger))
    assert (await api.post("/usage/v1/reports", json=signed_report(stranger, TON, 1))).status == 403

    # a registered meter may report only its own journal
    elsewhere = signed_report(env.meter_key, TON, 1, journal="f" * 32)
    assert (await api.post("/usage/v1/reports", json=elsewhere)).status == 403

    forged = signed_report(env.meter_key, TON, 1)
    forged["report"]["costNanoton"] = str(10 * TON)
    bad = await api.post("/usage/v1/reports", json=forged)
    assert bad.status == 403 and (await bad.json())["error"]["reason"] == "BadSignature"

    wrong = await api.post(
        "/usage/v1/reports", json=signed_report(env.meter_key, TON, 1, pool=f"{NS}/other")
    )
    assert wrong.status == 403
    assert (await api.post("/usage/v1/reports", json={"report": {}})).status == 400
    assert env.kube.status_writes == writes, "a refused forgery must write nothing"
    status = await env.status()
    assert "rejectedReports" not in status
    assert status.get("owed", "0") == "0"

    credit = await api.get(f"/usage/v1/credit/{NS}/{POOL}", headers=credit_headers(stranger))
    assert credit.status == 403
    metrics = await (await api.get("/metrics")).text()
    assert 'cocoon_usage_reports_rejected_total{reason="unattested"}' in metrics


async def test_a_registered_meter_of_another_pool_is_refused_and_counted(
    env: Env, api: Client
) -> None:
    env.add_channel()
    await env.reconcile()
    env.kube.put(INFERENCE_POOLS, {
        "metadata": {"name": "other", "namespace": NS},
        "spec": {},
        "status": {"meters": [meter_record(env.meter_key, pod="other-0")]},
    })
    writes = env.kube.status_writes
    for sequence in range(1, 6):  # a misbehaving meter keeps at it: five refusals, no write
        wrong = await api.post(
            "/usage/v1/reports",
            json=signed_report(env.meter_key, TON, sequence, pool=f"{NS}/other"),
        )
        assert wrong.status == 403
        assert (await wrong.json())["error"]["reason"] == "WrongPool"
    assert env.kube.status_writes == writes, "a refusal must write nothing of its own"
    status = await env.status()
    assert "rejectedReports" not in status
    assert status.get("owed", "0") == "0"
    # the channel's next accepted report carries them, in its one write
    ok = await api.post("/usage/v1/reports", json=signed_report(env.meter_key, TON // 10, 1))
    assert ok.status == 200
    assert env.kube.status_writes == writes + 1
    status = await env.status()
    assert status["rejectedReports"] == 5
    assert status["owed"] == str(TON // 10)
    ok = await api.post("/usage/v1/reports", json=signed_report(env.meter_key, TON // 5, 2))
    assert (await env.status())["rejectedReports"] == 5, "carried once, not again"


async def test_raising_the_deposit_tops_up_and_raises_credit(env: Env, api: Client) -> None:
    env.add_channel(creditWindow=str(10 * TON))
    await env.reconcile()
    path = f"/usage/v1/credit/{NS}/{POOL}"
    [entry] = (await (await api.get(path, headers=credit_headers(env.meter_key))).json())[
        "channels"
    ]
    assert int(entry["creditLimitNanoton"]) < 3 * TON

    await env.kube.patch(PAYMENT_CHANNELS, "ch", {"spec": {"deposit": str(5 * TON)}}, NS)
    await env.reconcile()
    status = await env.status()
    assert int(status["deposited"]) >= 5 * TON
    assert status["lastTransaction"]["kind"] == "topup"
    [entry] = (await (await api.get(path, headers=credit_headers(env.meter_key))).json())[
        "channels"
    ]
    assert int(entry["creditLimitNanoton"]) >= 5 * TON


async def test_deletion_claims_closes_and_withdraws(env: Env, api: Client) -> None:
    env.add_channel()
    await env.reconcile()
    await api.post("/usage/v1/reports", json=signed_report(env.meter_key, TON // 10, 1))
    await env.reconcile()
    await api.post("/usage/v1/reports", json=signed_report(env.meter_key, TON // 5, 2))
    payer_before = await env.balance(env.payer)

    with pytest.raises(kopf.TemporaryError):
        await paymentchannel.finalize(NS, "ch", {}, env.memo)
    status = await env.status()
    assert status["state"] == "Closing"
    assert status["claimed"] == str(TON // 5), "the last usage is signed and claimed on close"
    assert status["closeDeadline"]

    await emulator.travel(env.url, 61)
    await paymentchannel.finalize(NS, "ch", {}, env.memo)  # returns: finalizer released
    status = await env.status()
    assert status["state"] == "Closed"
    assert status["lastTransaction"]["kind"] == "withdraw"
    returned = await env.balance(env.payer) - payer_before
    assert 2 * TON - TON // 5 - TON // 50 < returned < 2 * TON - TON // 5 + TON // 50


async def test_never_deployed_channels_release_at_once(env: Env) -> None:
    env.add_channel()
    await paymentchannel.finalize(NS, "ch", {}, env.memo)


async def test_an_unreachable_chain_blocks_until_abandoned(env: Env) -> None:
    env.memo.payments.catalog = networks.Catalog(
        default="default",
        networks=[*env.memo.payments.catalog.networks, networks.Network(
            name="dead", url="http://127.0.0.1:9")],
    )
    env.add_channel(network="dead")
    env.kube.objects[(PAYMENT_CHANNELS.plural, NS, "ch")]["status"] = {
        "channelId": "0" * 31 + "1",
        "parameters": {
            "payerPublicKey": keys.public_bytes(env.payer_key).hex(),
            "payer": raw(env.payer),
            "payee": raw(env.payee),
            "closeDelaySeconds": 60,
        },
        "network": "dead",
    }
    with pytest.raises(Blocked):
        await env.reconcile()
    status = await env.status()
    reachable = condition(status, "ChainReachable")
    assert (reachable["status"], reachable["reason"]) == ("False", "ChainUnreachable")
    assert ABANDON_ANNOTATION in reachable["message"]
    with pytest.raises(kopf.TemporaryError) as retry:
        await paymentchannel.finalize(NS, "ch", {}, env.memo)
    assert retry.value.delay is not None and retry.value.delay <= paymentchannel.CLOSE_POLL_S
    await paymentchannel.finalize(NS, "ch", {ABANDON_ANNOTATION: "true"}, env.memo)


async def test_client_signing(env: Env, api: Client) -> None:
    from cocoon.ton import promises
    from cocoon.ton.client import PaymentChannel
    from cocoon.ton.wallet import Wallet

    env.add_channel(
        payer={"signing": "Client", "publicKey": keys.public_bytes(env.payer_key).hex()}
    )
    await env.reconcile()
    status = await env.status()
    assert status["state"] == "Pending"
    assert condition(status, "Funded")["reason"] == "NotDeployed"
    # the payer deploys the channel the operator described
    config = channel_chain.config_of(PaymentChannelStatus.model_validate(status))
    assert config is not None
    channel = PaymentChannel(env.chain, config)
    await channel.deploy(Wallet(env.chain, env.payer_key), 2 * TON)
    await env.reconcile()
    assert (await env.status())["state"] == "Open"

    await api.post("/usage/v1/reports", json=signed_report(env.meter_key, TON // 4, 1))
    await env.reconcile()
    assert "latestPromise" not in await env.status(), "the operator never signs for a Client"

    path = f"/payments/v1/channels/{NS}/ch/promises"
    stranger = promises.sign(keys.generate(), channel.address, config.channel_id, TON // 4)
    bad = await api.post(
        path, json={"cumulative": str(TON // 4), "signature": stranger.signature.hex()}
    )
    assert bad.status == 403
    too_much = promises.sign(env.payer_key, channel.address, config.channel_id, 100 * TON)
    refused = await api.post(
        path, json={"cumulative": str(too_much.cumulative), "signature": too_much.signature.hex()}
    )
    assert refused.status == 409
    good = promises.sign(env.payer_key, channel.address, config.channel_id, TON // 4)
    accepted = await api.post(
        path, json={"cumulative": str(TON // 4), "signature": good.signature.hex()}
    )
    assert accepted.status == 200, await accepted.text()
    await env.reconcile()
    status = await env.status()
    assert status["claimed"] == str(TON // 4)
    assert (await channel.state()).state is State.OPEN
    # deletion: the final claim is made, the payer (who holds the key) closes
    await paymentchannel.finalize(NS, "ch", {}, env.memo)


async def test_an_expired_meter_registration_is_not_trusted(env: Env, api: Client) -> None:
    env.add_channel()
    late = meter_record(env.meter_key)
    late["expiresAt"] = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    pool = await env.kube.get(INFERENCE_POOLS, POOL, NS)
    env.kube.put(INFERENCE_POOLS, {**pool, "status": {"meters": [late]}})
    refused = await api.post("/usage/v1/reports", json=signed_report(env.meter_key, 1, 1))
    assert refused.status == 403
