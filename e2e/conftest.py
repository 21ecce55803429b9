"""Session fixtures: one real control plane for the whole run, torn down even when tests fail."""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cocoon import keys
from cocoon.agent.simulated import DEFAULT_MEASUREMENT, SimulatedTee
from cocoon.devstack.agents import Agents, simulated_policy, simulated_tee
from cocoon.devstack.binaries import ensure_binaries
from cocoon.devstack.cluster import LocalCluster
from cocoon.devstack.gpunode import GpuNode
from cocoon.devstack.pccs import Pccs, serve
from cocoon.devstack.stack import Operator, install_crds, install_security, operator_kubeconfig
from cocoon.ton import emulator
from cocoon.ton.tvm import Address, raw
from cocoon.ton.wallet import wallet_address
from e2e.harness import BlackHole, eventually, get


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    workdir = Path(tempfile.mkdtemp(prefix="cocoon-e2e-"))
    local = LocalCluster(workdir, ensure_binaries())
    local.start()
    try:
        install_crds(local)
        install_security(local)
        yield local
    finally:
        local.stop()
        local.remove_workdir()


BLACK_HOLE_NETWORK = "black-hole"


@pytest.fixture(scope="session")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[emulator.Emulator]:
    """One chain emulator for the session: the provider's network `emulator` (the default).
    It keeps its chain in a state file, so a chaos test can stop it and bring the same chain
    back on the same address."""
    assert shutil.which("node"), "node is not installed: run `make setup`"
    with emulator.start(state=tmp_path_factory.mktemp("chain") / "state.json") as running:
        yield running


@pytest.fixture(scope="session")
def chain_url(chain: emulator.Emulator) -> str:
    return chain.url


@pytest.fixture(scope="session")
def black_hole() -> Iterator[BlackHole]:
    """The provider's network `black-hole`: accepts connections, never answers."""
    hole = BlackHole()
    yield hole
    hole.close()


@pytest.fixture(scope="session")
def provider_payee() -> Address:
    """The provider's payout wallet: every channel in the session pays it."""
    return wallet_address(keys.public_bytes(keys.generate()))


@pytest.fixture(scope="session")
def provider_env(chain_url: str, black_hole: BlackHole, provider_payee: Address) -> dict[str, str]:
    """What the chart gives the operator: the payout address and the network catalog."""
    catalog = {
        "default": "emulator",
        "networks": [
            {"name": "emulator", "kind": "Emulator", "url": chain_url},
            {"name": BLACK_HOLE_NETWORK, "kind": "Toncenter", "url": black_hole.url},
        ],
    }
    return {"COCOON_PAYOUT_ADDRESS": raw(provider_payee), "COCOON_NETWORKS": json.dumps(catalog)}


@pytest.fixture(scope="session")
def operator(cluster: LocalCluster, provider_env: dict[str, str]) -> Iterator[Operator]:
    op = Operator(cluster, operator_kubeconfig(cluster), env=provider_env)
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
    """Creates fake GPU nodes for one test, attests them through real agents, deletes them."""

    def __init__(self, cluster: LocalCluster, agents: Agents) -> None:
        self.cluster = cluster
        self.agents = agents
        self.nodes: dict[str, GpuNode] = {}

    def add(self, *nodes: GpuNode) -> list[GpuNode]:
        self.cluster.add_nodes(*nodes)
        self.nodes.update({n.name: n for n in nodes})
        return list(nodes)

    def attest(self, name: str) -> dict[str, Any]:
        """Start the node's agent and wait until the operator has verified it and said so."""
        node = self.nodes[name]
        tee = ("--simulate-tee", "tdx") if node.tee == "tdx" else ()
        self.agents.start(name, "--gpus", str(node.gpus), *tee)
        return wait_attested(self.cluster, name)

    def cleanup(self) -> None:
        for name in self.nodes:
            self.agents.stop(name)
        if self.nodes:
            self.cluster.kubectl("delete", "node", *self.nodes, "--wait=false", check=False)


def wait_attested(cluster: LocalCluster, name: str) -> dict[str, Any]:
    def verified() -> dict[str, Any] | None:
        node = get(cluster, "node", name) or {}
        labels = node.get("metadata", {}).get("labels", {})
        taints = node.get("spec", {}).get("taints") or []
        if labels.get("cocoon.dev/attested") == "true" and not any(
            t["key"] == "cocoon.dev/unattested" for t in taints
        ):
            return node
        return None

    return dict(eventually(verified, timeout=60, what=f"node {name} attested"))


@pytest.fixture(scope="session")
def pccs(simulated: Path) -> Iterator[Pccs]:
    """The local PCCS stand-in, serving the simulated TDX platform's collateral."""
    tdx = SimulatedTee.load(simulated).tdx
    assert tdx is not None
    with serve(tdx.collateral(datetime.now(UTC))) as stand_in:
        yield stand_in


@pytest.fixture(scope="session")
def default_policy(cluster: LocalCluster, simulated: Path, pccs: Pccs) -> dict[str, Any]:
    """The cluster trusts this run's simulated TEE, and only because the policy names its roots;
    TDX collateral comes from the PCCS stand-in."""
    measured = [DEFAULT_MEASUREMENT.hex()]
    policy = simulated_policy(
        simulated, gpus=1, snp={"measurements": measured},
        tdx={"mrTd": measured, "collateral": {"pccsUrl": pccs.url}},
    )  # fmt: skip
    cluster.apply(policy)
    return policy


@pytest.fixture
def nodes(
    cluster: LocalCluster, agents: Agents, default_policy: dict[str, Any]
) -> Iterator[NodeFactory]:
    factory = NodeFactory(cluster, agents)
    yield factory
    factory.cleanup()


@pytest.fixture(scope="session")
def simulated(cluster: LocalCluster) -> Path:
    return simulated_tee(cluster.workdir / "sim")


@pytest.fixture
def agents(cluster: LocalCluster, operator: Operator, simulated: Path) -> Iterator[Agents]:
    fleet = Agents(cluster, operator, simulated)
    yield fleet
    fleet.stop_all()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed e2e test carries the operator's and agents' log tails: the why is right there."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when != "call" or not report.failed:
        return
    for fixture in ("operator", "agents"):
        value = item.funcargs.get(fixture) if hasattr(item, "funcargs") else None
        supervisor = getattr(value, "supervisor", None)
        for process in getattr(supervisor, "processes", []):
            report.sections.append((f"log of {process.name}", process.tail(60)))
