"""PaymentChannel on a real control plane, the operator under the chart's RBAC, the chain
emulator as the chain: open and fund, attested usage to promise to claim, credit for meters,
refusal of unattested reports, top-up, and close with withdrawal on deletion."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from typing import Any

import pytest

from cocoon import keys, signed_request
from cocoon.devstack import money
from cocoon.devstack.calls import http_json
from cocoon.devstack.cluster import LocalCluster
from cocoon.devstack.meters import (
    PRICE,
    allow_secrets,
    payer_and_channel,
    post_report,
    registered_meter,
    report,
    signed_credit,
)
from cocoon.devstack.stack import Operator
from cocoon.ton import emulator
from cocoon.ton.toncenter import ToncenterChain
from cocoon.ton.tvm import Address, raw
from cocoon.ton.units import TON
from cocoon.ton.wallet import wallet_address
from e2e.harness import condition, eventually, get

pytestmark = [pytest.mark.e2e, pytest.mark.chain]


def balance(url: str, address: Address) -> int:
    async def read() -> int:
        async with ToncenterChain(url) as chain:
            return (await chain.account(address)).balance

    return asyncio.run(read())


def payouts(url: str, payee: Address, channel: str) -> list[int]:
    """What the payee received from this channel, per transaction: each claim is one payout
    (the payee is the provider's, shared by every channel of the session)."""

    async def read() -> list[int]:
        async with ToncenterChain(url) as chain:
            txs = await chain.transactions(payee, limit=100)
        return [tx.in_value for tx in txs if tx.in_source == Address(channel)]

    return asyncio.run(read())


def reconciled(cluster: LocalCluster, namespace: str, chain_url: str) -> money.Books:
    return money.reconciled(chain_url, f"{namespace}/ch", cluster.kubeconfig)


def channel_status(cluster: LocalCluster, namespace: str) -> dict[str, Any]:
    body = get(cluster, "paymentchannel.cocoon.dev", "ch", "-n", namespace) or {}
    return dict(body.get("status") or {})


def test_paid_inference_channel(
    cluster: LocalCluster,
    operator: Operator,
    namespace: str,
    chain_url: str,
    provider_payee: Address,
) -> None:
    payer_key = keys.generate()
    payer = wallet_address(keys.public_bytes(payer_key))
    asyncio.run(emulator.faucet(chain_url, payer, 20 * TON))
    cluster.apply(
        *payer_and_channel(
            namespace,
            payer_key,
            creditWindow=str(TON // 2),
            claim={"threshold": str(TON // 5), "intervalSeconds": 3600},
            closeDelaySeconds=60,
        )
    )

    # Secrets are opt-in per namespace: until the tenant binds the role, the channel says how
    denied = eventually(
        lambda: (
            (c := condition({"status": channel_status(cluster, namespace)}, "Ready")).get("reason")
            == "SecretsAccessDenied"
            and c
        ),
        what="SecretsAccessDenied before the namespace opts in",
    )
    command = denied["message"].split("Allow it here: ", 1)[1]
    assert command.startswith(f"kubectl create rolebinding cocoon-operator-secrets -n {namespace}")
    cluster.kubectl(*command.split()[1:])  # exactly what the message told the tenant to run

    # open, funded, credential issued; the token is only in the Secret
    status = eventually(
        lambda: (
            (s := channel_status(cluster, namespace)).get("state") == "Open"
            and condition({"status": s}, "Ready").get("status") == "True"
            and s
        ),
        timeout=90,
        what="the channel open and Ready",
    )
    assert int(status["deposited"]) >= 2 * TON
    assert condition({"status": status}, "Funded")["status"] == "True"
    secret = get(cluster, "secret", status["credentialSecret"], "-n", namespace)
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert token not in json.dumps(status) and token not in operator.log()
    assert status["credentialSha256"] == hashlib.sha256(token.encode()).hexdigest()
    events = (
        get(cluster, "events", "-n", namespace, "--field-selector", "involvedObject.name=ch") or {}
    )
    assert any(e["reason"] == "Open" for e in events.get("items", []))

    # a registered meter reports usage; the operator signs a promise and claims it
    meter = registered_meter(cluster, namespace)
    eventually(
        lambda: channel_status(cluster, namespace).get("maxPrice"),
        what="the pool's price pinned as the channel's maximum",
    )
    post_report(operator, report(meter, namespace, TON // 4, 10))
    status = eventually(
        lambda: (s := channel_status(cluster, namespace)).get("claimed") == str(TON // 4) and s,
        timeout=60,
        what="the usage promised and claimed",
    )
    assert status["latestPromise"]["cumulative"] == str(TON // 4)
    assert status["lastTransaction"]["kind"] == "claim"
    assert status["parameters"]["payee"] == raw(provider_payee), "the provider is paid"
    # exact: the payee gets what was claimed less the contract's claim charge, read from the
    # chain (the provider's wallet is shared by the session's channels: only this channel's)
    books = reconciled(cluster, namespace, chain_url)
    assert books.owed == books.claimed + books.unclaimed == TON // 4
    paid, _ = money.received(chain_url, provider_payee, [books.address])
    assert paid == books.paid_out == TON // 4 - books.claim_charges
    assert 0 < books.claim_charges < TON // 100
    # the ledger's headline figures, as a person sees them
    wide = cluster.kubectl("get", "pch", "ch", "-n", namespace, "-o", "wide").stdout
    print(wide)
    header, row = wide.splitlines()[:2]
    columns = dict(zip(header.split(), row.split(), strict=False))
    fees = channel_status(cluster, namespace)["ledger"]["feesPaid"]
    assert (columns["OWED"], columns["PROMISED"], columns["CLAIMED"]) == (str(TON // 4),) * 3
    assert columns["FEES"] == fees and int(fees) > books.claim_charges
    assert columns["REFUNDED"] == "0"

    # the meter's credit document, for its signed request only: its public key is no credential
    meter_hex = keys.public_bytes(meter).hex()
    code, refused = http_json(
        "GET",
        f"{operator.api_url}/usage/v1/credit/{namespace}/pool?meter={meter_hex}",
        context=operator.tls,
    )
    assert code == 401 and "channels" not in refused
    code, document = signed_credit(operator, namespace, meter)
    assert code == 200, document
    [entry] = document["channels"]
    assert entry["credentialSha256"] == hashlib.sha256(token.encode()).hexdigest()
    assert int(entry["creditLimitNanoton"]) == TON // 4 + TON // 2

    # an unregistered key is refused and counted, and writes nothing
    unattested = 'cocoon_usage_reports_rejected_total{reason="unattested"}'
    before = operator.metric(unattested)
    code, answer = http_json(
        "POST",
        f"{operator.api_url}/usage/v1/reports",
        report(keys.generate(), namespace, 10 * TON, 11),
        context=operator.tls,
    )
    assert code == 403 and answer["error"]["reason"] == "Unattested"
    assert operator.metric(unattested) == before + 1
    assert "rejectedReports" not in channel_status(cluster, namespace)
    assert channel_status(cluster, namespace)["owed"] == str(TON // 4)

    # raising the deposit tops up on chain and raises the meters' credit
    cluster.kubectl(
        "patch",
        "paymentchannel.cocoon.dev",
        "ch",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"deposit": str(3 * TON), "creditWindow": str(5 * TON)}}),
    )
    eventually(
        lambda: int(channel_status(cluster, namespace).get("deposited", 0)) >= 3 * TON,
        timeout=60,
        what="the top-up",
    )
    code, document = signed_credit(operator, namespace, meter)
    assert int(document["channels"][0]["creditLimitNanoton"]) >= 3 * TON - TON // 100

    # deletion: more usage is claimed, the close starts, and after the delay the payer
    # withdraws the rest
    http_json(
        "POST",
        f"{operator.api_url}/usage/v1/reports",
        report(meter, namespace, TON // 3, 12),
        context=operator.tls,
    )
    payer_before = balance(chain_url, payer)
    cluster.kubectl("delete", "paymentchannel.cocoon.dev", "ch", "-n", namespace, "--wait=false")
    status = eventually(
        lambda: (s := channel_status(cluster, namespace)).get("state") == "Closing" and s,
        timeout=60,
        what="the close started",
    )
    assert status["claimed"] == str(TON // 3)
    closing = reconciled(cluster, namespace, chain_url)
    assert closing.owed == closing.claimed == TON // 3 and closing.unclaimed == 0
    asyncio.run(emulator.travel(chain_url, 61))
    eventually(
        lambda: get(cluster, "paymentchannel.cocoon.dev", "ch", "-n", namespace) is None,
        timeout=60,
        what="the finalizer released after the withdrawal",
    )
    # exact: the refund is the deposits less what was claimed less the channel's fees the
    # payee's claim charges did not cover, less the payer wallet's receiving fee (all on chain)
    closed = money.ledger(chain_url, closing.address)
    refunded, receiving = money.received(chain_url, payer, [closed.address])
    assert refunded == closed.refunded
    payer_fees = closed.channel_fees - closed.claim_charges + receiving
    returned = balance(chain_url, payer) - payer_before
    assert returned == closed.deposits - closed.claimed - payer_fees
    assert balance(chain_url, Address(closed.address)) == 0


def test_junk_requests_cost_the_api_server_nothing(
    cluster: LocalCluster, operator: Operator, namespace: str
) -> None:
    """50 forged, unregistered or unsigned requests of each kind reach no Kubernetes call, as
    the API server's own audit log shows; an authenticated request does, and is seen there."""
    meter, stranger = registered_meter(cluster, namespace), keys.generate()
    forged = report(meter, namespace, 10 * TON, 1, channel="ghost")
    forged["signature"] = report(stranger, namespace, 10 * TON, 1, channel="ghost")["signature"]
    credit = f"/usage/v1/credit/{namespace}/ghostpool"
    api = operator.api_url
    junk: list[tuple[str, str, Any, dict[str, str]]] = [
        ("POST", f"{api}/usage/v1/reports", forged, {}),  # badly signed
        ("POST", f"{api}/usage/v1/reports",  # well signed by a key no pool registered
         report(stranger, namespace, TON, 1, pool="ghostpool", channel="ghost"), {}),
        ("GET", f"{api}{credit}?meter={keys.public_bytes(meter).hex()}", None, {}),  # key only
        ("GET", f"{api}{credit}", None,
         {signed_request.HEADER: signed_request.sign(stranger, "GET", credit)}),
        ("POST", f"{api}/payments/v1/channels/{namespace}/ghost/promises",
         {"cumulative": "1", "signature": "00" * 64}, {}),
    ]
    for method, url, body, headers in junk:
        for _ in range(50):
            code, answer = http_json(method, url, body, context=operator.tls, headers=headers)
            assert code in (401, 403, 404), (url, code, answer)

    # the control: the registered meter's report about the same missing channel costs one GET
    post_report(operator, report(meter, namespace, TON, 1, channel="ghost"), expect=410)

    def ghostly() -> list[tuple[str, str, str]]:
        return [
            (ref.get("resource", ""), ref.get("name", ""), event["verb"])
            for event in cluster.audit_events()
            if (ref := event.get("objectRef") or {}).get("namespace") == namespace
            and ref.get("name") in ("ghost", "ghostpool")
        ]

    seen = eventually(ghostly, timeout=30, what="the control's GET in the audit log")
    assert seen == [("paymentchannels", "ghost", "get")]


@pytest.mark.parametrize("kill_after_s", [0.0, 0.3, 1.0])
def test_operator_killed_while_usage_is_settled_claims_exactly_once(
    cluster: LocalCluster,
    operator: Operator,
    namespace: str,
    chain_url: str,
    provider_payee: Address,
    kill_after_s: float,
) -> None:
    """kill -9 the real operator process at varying points after usage arrives (before, during
    or after the promise and the claim), restart it: the payee is paid once, nothing is lost."""
    payer_key = keys.generate()
    payer = wallet_address(keys.public_bytes(payer_key))
    asyncio.run(emulator.faucet(chain_url, payer, 5 * TON))
    allow_secrets(cluster, namespace)
    meter = registered_meter(cluster, namespace)  # the pool first: its price is pinned
    cluster.apply(
        *payer_and_channel(
            namespace,
            payer_key,
            claim={"threshold": str(TON // 10), "intervalSeconds": 3600},
        )
    )
    eventually(
        lambda: (s := channel_status(cluster, namespace)).get("state") == "Open"
        and s.get("maxPrice"),
        timeout=90,
        what="the channel open",
    )
    post_report(operator, report(meter, namespace, TON // 4, 1))
    time.sleep(kill_after_s)  # the kill point is the variable under test, not a wait for luck
    operator.kill()
    operator.start()
    # the meter re-sends its cumulative report, as it does after any failure
    code, answer = http_json(
        "POST",
        f"{operator.api_url}/usage/v1/reports",
        report(meter, namespace, TON // 4, 1),
        context=operator.tls,
    )
    assert code == 200, answer
    status = eventually(
        lambda: (s := channel_status(cluster, namespace)).get("claimed") == str(TON // 4) and s,
        timeout=90,
        what="the usage claimed after the restart",
    )
    assert status["owed"] == str(TON // 4)
    books = reconciled(cluster, namespace, chain_url)
    assert books.owed == books.claimed + books.unclaimed == TON // 4
    assert len(payouts(chain_url, provider_payee, books.address)) == 1, "paid once, not twice"
    paid, _ = money.received(chain_url, provider_payee, [books.address])
    assert paid == TON // 4 - books.claim_charges, "to the nanoton"


def test_a_tenant_cannot_choose_payee_chain_or_a_later_price(
    cluster: LocalCluster, namespace: str
) -> None:
    """Admission on the real API server: no payee field, a network is a name, and the network
    and maxPrice are fixed at creation."""

    def apply(spec: dict[str, Any]) -> str:
        channel = payer_and_channel(namespace, keys.generate(), **spec)[1]
        result = cluster.kubectl(
            "apply", "--server-side", "--validate=strict", "-f", "-",
            input=json.dumps(channel), check=False,
        )
        return result.stderr if result.returncode else ""

    tenant_payee = raw(wallet_address(keys.public_bytes(keys.generate())))
    assert "payeeAddress" in apply({"payeeAddress": tenant_payee})
    assert "network" in apply({"network": {"kind": "Toncenter", "url": "http://tenant-chain"}})
    assert apply({"network": "emulator", "maxPrice": PRICE}) == ""
    for patch, field in (
        ({"network": "other"}, "spec.network is fixed at creation"),
        ({"maxPrice": {"perOutputToken": "9"}}, "spec.maxPrice is fixed at creation"),
    ):
        result = cluster.kubectl(
            "patch", "paymentchannel.cocoon.dev", "ch", "-n", namespace, "--type=merge",
            "-p", json.dumps({"spec": patch}), check=False,
        )
        assert result.returncode != 0 and field in result.stderr, result.stderr
