"""A tenant cannot stall the control loop: PaymentChannels whose chain endpoint accepts
connections and never answers (a loopback black hole) must not delay node re-attestation or
verdict expiry for anyone, and the channels themselves say what is wrong."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cocoon import keys
from cocoon.devstack.agents import Agents, simulated_policy
from cocoon.devstack.cluster import LocalCluster
from cocoon.devstack.gpunode import GpuNode
from cocoon.devstack.meters import allow_secrets
from cocoon.devstack.stack import Operator
from cocoon.ton import emulator, keyfile
from cocoon.ton.tvm import raw
from cocoon.ton.units import TON
from cocoon.ton.wallet import wallet_address
from e2e.conftest import BLACK_HOLE_NETWORK, NodeFactory
from e2e.harness import BlackHole, condition, eventually, get

pytestmark = pytest.mark.e2e
CHANNELS = 6  # at ~30 s of client timeout each, one shared loop would be stuck for 3 minutes


def payer_secret(namespace: str, payer: Ed25519PrivateKey) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "payer", "namespace": namespace},
        "data": {"key": base64.b64encode(keyfile.to_json(payer).encode()).decode()},
    }


def dead_channels(cluster: LocalCluster, namespace: str) -> None:
    """A tenant's payer key and CHANNELS channels on the provider's `black-hole` network,
    Secrets allowed in the namespace."""
    allow_secrets(cluster, namespace)
    payer = keys.generate()
    channels = [
        {
            "apiVersion": "cocoon.dev/v1alpha1",
            "kind": "PaymentChannel",
            "metadata": {"name": f"dead-{i}", "namespace": namespace},
            "spec": {
                "poolName": "pool",
                "payer": {"keySecretRef": {"name": "payer"}},
                "deposit": "2000000000",
                "network": BLACK_HOLE_NETWORK,
            },
        }
        for i in range(CHANNELS)
    ]
    cluster.apply(payer_secret(namespace, payer), *channels)


def status_of(cluster: LocalCluster, name: str) -> dict[str, Any]:
    return dict((get(cluster, "attestednode", name) or {}).get("status") or {})


def test_dead_chain_endpoints_do_not_stall_attestation_or_expiry(
    cluster: LocalCluster,
    operator: Operator,
    nodes: NodeFactory,
    agents: Agents,
    simulated: Path,
    namespace: str,
    black_hole: BlackHole,
) -> None:
    # the shortest cadence a policy allows: re-attest every 30 s, a verdict lives 60 s
    cluster.apply(
        simulated_policy(
            simulated, name="brisk", gpus=1, reattestIntervalSeconds=30, verdictLifetimeSeconds=60
        )
    )
    for name in ("steady", "lapsing"):
        nodes.add(GpuNode(name, gpus=1, tee="sev-snp"))
        eventually(lambda n=name: get(cluster, "attestednode", n), what=f"AttestedNode {name}")
        cluster.kubectl(
            "patch", "attestednode", name, "--type=merge", "-p", '{"spec":{"policyName":"brisk"}}'
        )
        nodes.attest(name)

    dead_channels(cluster, namespace)
    eventually(
        lambda: len(black_hole.held) >= CHANNELS,
        timeout=60,
        what="the operator stuck on every dead channel's endpoint",
    )
    agents.stop("lapsing")  # no more answers: its verdict must lapse on time
    seen = {status_of(cluster, "steady").get("verifiedAt")}

    def reattested_twice() -> bool:
        seen.add(status_of(cluster, "steady").get("verifiedAt"))
        return len(seen) >= 3

    # two re-attestations need ~60 s, the lapse at most 60 s; a loop stuck behind the channels
    # (6 x 30 s) would miss both by far
    eventually(reattested_twice, timeout=100, what="two re-attestations of steady")
    lapsed = eventually(
        lambda: (
            (c := condition(get(cluster, "attestednode", "lapsing"), "Ready")).get("reason")
            == "VerdictExpired"
            and c
        ),
        timeout=30,
        what="the lapsed verdict expired",
    )
    assert "evicted" in lapsed["message"]
    assert status_of(cluster, "steady")["verdict"] == "Verified"

    # the dead endpoints degrade only their own channels, and those say so
    for i in range(CHANNELS):
        eventually(
            lambda i=i: (
                condition(
                    get(cluster, "paymentchannel.cocoon.dev", f"dead-{i}", "-n", namespace), "Ready"
                ).get("reason")
                == "ChainUnreachable"
            ),
            timeout=90,
            what=f"dead-{i} reports ChainUnreachable",
        )


# the chains pass as this test runs it: ChainReachable turns False at most PROBE_BOUND_S after
# the chain stops answering (interval + per-probe deadline, see cocoon.controllers.chainprobe)
PROBE = {"COCOON_CHAINS_RESYNC_SECONDS": "3", "COCOON_CHAINS_TIMEOUT_SECONDS": "2"}
PROBE_BOUND_S = 5
# the watch, our status write and kubectl polling on a loaded machine, beyond the stated bound
SLACK_S = 10


def pch(cluster: LocalCluster, namespace: str, name: str = "ch") -> dict[str, Any]:
    return dict(get(cluster, "paymentchannel.cocoon.dev", name, "-n", namespace) or {})


def test_a_stopped_chain_flips_chain_reachable_in_time_and_funded_follows_the_spec(
    cluster: LocalCluster, operator: Operator, namespace: str
) -> None:
    """The real operator, its channels on the chain it was configured with (no tenant-chosen
    network or payee): the emulator is stopped, and the channel says so within the bound; a
    deposit raised meanwhile shows as the new target at once. The channels pass is slowed to
    10 minutes here, so only the reachability probe can make the flip in time."""
    payer_key = keys.generate()
    payee = wallet_address(keys.public_bytes(keys.generate()))
    saved = dict(operator.env)
    chain = emulator.start()
    try:
        asyncio.run(
            emulator.faucet(chain.url, wallet_address(keys.public_bytes(payer_key)), 5 * TON)
        )
        operator.stop()
        operator.env = {
            **saved,
            **PROBE,
            "COCOON_CHANNELS_RESYNC_SECONDS": "600",
            "COCOON_NETWORKS": json.dumps({
                "networks": [{"name": "emulator", "kind": "Emulator", "url": chain.url}]
            }),
            "COCOON_PAYOUT_ADDRESS": raw(payee),
        }
        operator.start()
        allow_secrets(cluster, namespace)
        cluster.apply(
            payer_secret(namespace, payer_key),
            {
                "apiVersion": "cocoon.dev/v1alpha1",
                "kind": "PaymentChannel",
                "metadata": {"name": "ch", "namespace": namespace},
                "spec": {
                    "poolName": "pool",
                    "payer": {"keySecretRef": {"name": "payer"}},
                    "deposit": str(2 * TON),
                },
            },
        )
        eventually(
            lambda: condition(pch(cluster, namespace), "Ready").get("status") == "True",
            timeout=90,
            what="the channel open on the operator's chain",
        )
        assert condition(pch(cluster, namespace), "ChainReachable")["status"] == "True"
        chain.stop()
        stopped = time.monotonic()
        flipped = eventually(
            lambda: (
                (c := condition(pch(cluster, namespace), "ChainReachable")).get("status") == "False"
                and c
            ),
            timeout=PROBE_BOUND_S + SLACK_S,
            what="ChainReachable=False after the chain stopped",
        )
        print(f"ChainReachable flipped {time.monotonic() - stopped:.1f} s after the chain stopped")
        assert flipped["reason"] == "ChainUnreachable"
        assert condition(pch(cluster, namespace), "Ready")["reason"] == "ChainUnreachable"

        # the tenant raises the deposit while the chain is down: Funded states the new target
        cluster.kubectl(
            "patch",
            "paymentchannel.cocoon.dev",
            "ch",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            json.dumps({"spec": {"deposit": str(3 * TON)}}),
        )
        funded = eventually(
            lambda: (
                (c := condition(pch(cluster, namespace), "Funded")).get("reason") == "BelowDeposit"
                and c
            ),
            timeout=30,
            what="Funded against the raised deposit",
        )
        assert f"below the target {3 * TON}" in funded["message"]
        events = get(
            cluster, "events", "-n", namespace, "--field-selector", "involvedObject.name=ch"
        )
        assert any(e["reason"] == "ChainUnreachable" for e in (events or {}).get("items", []))
    finally:
        chain.stop()
        cluster.kubectl(
            "annotate",
            "paymentchannel.cocoon.dev",
            "ch",
            "-n",
            namespace,
            "cocoon.dev/abandon-channel=true",
            check=False,
        )
        cluster.kubectl(
            "delete",
            "paymentchannel.cocoon.dev",
            "ch",
            "-n",
            namespace,
            "--wait=true",
            "--timeout=60s",
            check=False,
        )
        operator.stop()
        operator.env = saved
        operator.start()
