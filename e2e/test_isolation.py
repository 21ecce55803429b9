"""A tenant cannot stall the control loop: PaymentChannels whose chain endpoint accepts
connections and never answers (a loopback black hole) must not delay node re-attestation or
verdict expiry for anyone, and the channels themselves say what is wrong."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from cocoon import keys
from cocoon.devstack.cluster import GpuNode, LocalCluster
from cocoon.devstack.stack import OPERATOR_NAMESPACE, Agents, Operator, simulated_policy
from cocoon.ton import keyfile
from e2e.conftest import BLACK_HOLE_NETWORK, NodeFactory
from e2e.harness import BlackHole, condition, eventually, get

pytestmark = pytest.mark.e2e
CHANNELS = 6  # at ~30 s of client timeout each, one shared loop would be stuck for 3 minutes


def dead_channels(cluster: LocalCluster, namespace: str) -> None:
    """A tenant's payer key and CHANNELS channels on the provider's `black-hole` network,
    Secrets allowed in the namespace."""
    cluster.kubectl(
        "create",
        "rolebinding",
        "cocoon-operator-secrets",
        "-n",
        namespace,
        "--clusterrole=cocoon-operator-secrets",
        f"--serviceaccount={OPERATOR_NAMESPACE}:cocoon-operator",
    )
    payer = keys.generate()
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "payer", "namespace": namespace},
        "data": {"key": base64.b64encode(keyfile.to_json(payer).encode()).decode()},
    }
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
    cluster.apply(secret, *channels)


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
