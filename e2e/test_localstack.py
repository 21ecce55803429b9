"""The local stack itself: fake GPU nodes hold a Lease, renewed like a kubelet's, so the node
lifecycle controller keeps them Ready instead of flapping them NotReady between heartbeats."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cocoon.devstack.cluster import NODE_LEASE_SECONDS, LocalCluster
from cocoon.devstack.gpunode import GpuNode
from e2e.harness import condition, eventually, get

pytestmark = pytest.mark.e2e


@pytest.fixture
def fake_node(cluster: LocalCluster) -> Iterator[str]:
    cluster.add_nodes(GpuNode("lease-0", gpus=1, tee=None))
    yield "lease-0"
    cluster.kubectl("delete", "node", "lease-0", "--wait=false", check=False)


def test_fake_nodes_renew_a_lease_and_stay_ready(cluster: LocalCluster, fake_node: str) -> None:
    def lease() -> dict[str, str] | None:
        found = get(cluster, "lease", fake_node, "-n", "kube-node-lease")
        return (found or {}).get("spec")

    first = eventually(lease, what=f"Lease kube-node-lease/{fake_node}")
    assert int(first["leaseDurationSeconds"]) == NODE_LEASE_SECONDS
    renewed = eventually(
        lambda: (spec := lease()) and spec["renewTime"] > first["renewTime"] and spec,
        timeout=NODE_LEASE_SECONDS, what="a renewed Lease",
    )
    assert renewed["holderIdentity"] == first["holderIdentity"]  # kwok's own identity
    assert condition(get(cluster, "node", fake_node), "Ready").get("status") == "True"
