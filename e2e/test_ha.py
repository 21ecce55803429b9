"""Two operator replicas on the real control plane: both serve the HTTP API, one holds the Lease.
kill -9 the leader while usage is being settled: the standby takes the Lease, accepts the meter's
re-sent report, and claims it exactly once on the chain emulator; no verified node's verdict
changes on the way."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cocoon import keys
from cocoon.devstack import money
from cocoon.devstack.calls import http_json
from cocoon.devstack.cluster import LocalCluster
from cocoon.devstack.gpunode import GpuNode
from cocoon.devstack.meters import (
    allow_secrets,
    payer_and_channel,
    post_report,
    registered_meter,
    report,
    signed_credit,
)
from cocoon.devstack.stack import OPERATOR_NAMESPACE, Operator, operator_kubeconfig
from cocoon.ton import emulator
from cocoon.ton.tvm import Address
from cocoon.ton.units import TON
from cocoon.ton.wallet import wallet_address
from e2e.conftest import NodeFactory
from e2e.harness import condition, eventually, get
from e2e.test_paymentchannel import channel_status, payouts, reconciled

pytestmark = [pytest.mark.e2e, pytest.mark.chain]
LEASE = "cocoon-operator"
TAKEOVER_S = 30  # lease 6 s + retry 1 s + kopf's start, with room for a loaded machine


def holder(cluster: LocalCluster) -> str:
    lease = get(cluster, "lease", LEASE, "-n", OPERATOR_NAMESPACE) or {}
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


@pytest.fixture
def standby(cluster: LocalCluster, operator: Operator) -> Iterator[Operator]:
    """A second replica that waits for the Lease; afterwards the session's operator leads
    again (the standby stops cleanly and releases the Lease)."""
    eventually(lambda: holder(cluster).startswith(operator.identity_prefix), what="leader")
    second = Operator(cluster, operator_kubeconfig(cluster), name="standby", env=operator.env)
    second.start(lead=False)
    try:
        yield second
    finally:
        second.stop()
        if operator.process is None or not operator.process.alive():
            operator.start()


def test_leader_killed_while_usage_is_settled(
    cluster: LocalCluster,
    operator: Operator,
    standby: Operator,
    nodes: NodeFactory,
    namespace: str,
    chain_url: str,
    provider_payee: Address,
) -> None:
    # a verified node whose verdict must not flap through the failover
    nodes.add(GpuNode("ha-steady", gpus=1, tee="sev-snp"))
    nodes.attest("ha-steady")
    before = condition(get(cluster, "attestednode", "ha-steady"), "Ready")
    assert before["status"] == "True"

    payer_key = keys.generate()
    payer = wallet_address(keys.public_bytes(payer_key))
    asyncio.run(emulator.faucet(chain_url, payer, 5 * TON))
    allow_secrets(cluster, namespace)
    meter = registered_meter(cluster, namespace)  # the pool first: its price is pinned
    cluster.apply(
        *payer_and_channel(
            namespace, payer_key,
            claim={"threshold": str(TON // 10), "intervalSeconds": 3600},
        )
    )  # fmt: skip
    eventually(
        lambda: (s := channel_status(cluster, namespace)).get("state") == "Open"
        and s.get("maxPrice"),
        timeout=90,
        what="the channel open",
    )

    # the standby serves the API too: a report to it is accepted and its credit is visible
    # (below the claim threshold: the only claim is the one made across the failover)
    post_report(standby, report(meter, namespace, TON // 20, 1))
    code, document = signed_credit(standby, namespace, meter)
    assert code == 200, document

    # usage reaches the leader, which starts settling it; kill -9 the leader right then
    post_report(operator, report(meter, namespace, TON // 4, 2))
    operator.kill()
    killed_at = time.monotonic()

    # the meter re-sends its cumulative report to whichever replica answers: the standby
    code, answer = http_json(
        "POST",
        f"{standby.api_url}/usage/v1/reports",
        report(meter, namespace, TON // 4, 2),
        context=standby.tls,
    )
    assert code == 200, answer
    eventually(
        lambda: holder(cluster).startswith(standby.identity_prefix),
        timeout=TAKEOVER_S,
        what="the standby takes the Lease",
    )
    print(f"takeover after kill -9: {time.monotonic() - killed_at:.1f} s")

    status = eventually(
        lambda: (s := channel_status(cluster, namespace)).get("claimed") == str(TON // 4) and s,
        timeout=90,
        what="the usage claimed by the new leader",
    )
    assert status["owed"] == str(TON // 4)
    books = reconciled(cluster, namespace, chain_url)
    assert len(payouts(chain_url, provider_payee, books.address)) == 1, "paid once, not twice"
    value, _ = money.received(chain_url, provider_payee, [books.address])
    assert value == TON // 4 - books.claim_charges, "to the nanoton"

    # the new leader's passes ran over the node (from empty caches) and left its verdict alone
    after: dict[str, Any] = condition(get(cluster, "attestednode", "ha-steady"), "Ready")
    assert after["status"] == "True"
    assert after["lastTransitionTime"] == before["lastTransitionTime"]
    assert get(cluster, "attestednode", "ha-steady")["status"]["verdict"] == "Verified"
