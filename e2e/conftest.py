"""Session fixtures: one real control plane for the whole run, torn down even when tests fail."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cocoon.devstack.cluster import GpuNode, LocalCluster, ensure_binaries
from e2e.harness import Operator, install_crds, operator_kubeconfig


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    workdir = Path(tempfile.mkdtemp(prefix="cocoon-e2e-"))
    local = LocalCluster(workdir, ensure_binaries())
    local.start()
    try:
        install_crds(local)
        yield local
    finally:
        local.stop()
        local.remove_workdir()


@pytest.fixture(scope="session")
def operator(cluster: LocalCluster) -> Iterator[Operator]:
    op = Operator(cluster, operator_kubeconfig(cluster))
    op.start()
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture
def namespace(cluster: LocalCluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


class NodeFactory:
    """Creates fake GPU nodes for one test and deletes them after it."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.names: list[str] = []

    def add(self, *nodes: GpuNode) -> list[GpuNode]:
        self.cluster.add_nodes(*nodes)
        self.names += [n.name for n in nodes]
        return list(nodes)

    def attest(self, name: str, attested: bool = True) -> None:
        """Set the attestation label by hand (the attestation controller does this for real)."""
        value = "cocoon.dev/attested=true" if attested else "cocoon.dev/attested-"
        self.cluster.kubectl("label", "node", name, value, "--overwrite")

    def cleanup(self) -> None:
        if self.names:
            self.cluster.kubectl("delete", "node", *self.names, "--wait=false", check=False)


@pytest.fixture
def nodes(cluster: LocalCluster) -> Iterator[NodeFactory]:
    factory = NodeFactory(cluster)
    yield factory
    factory.cleanup()
