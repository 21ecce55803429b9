"""Chaos on the session's real control plane, loopback only, each test bounded: an agent that
floods the evidence route, a kube-apiserver restart and an etcd restart. The operator serves
throughout or comes back as its Deployment would bring it back (exit 3 = it stopped acting
because it could not renew its Lease, never a crash), no verified node's verdict flaps, and
the stack works again without anyone's help: a node added afterwards is attested."""

from __future__ import annotations

import asyncio
import collections
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cocoon import keys
from cocoon.agent.simulated import SimulatedTee
from cocoon.controllers.run import LOST_LEADERSHIP
from cocoon.devstack.agents import Agents
from cocoon.devstack.cluster import LocalCluster
from cocoon.devstack.gpunode import GpuNode
from cocoon.devstack.process import http_ok
from cocoon.devstack.stack import OPERATOR_NAMESPACE, Operator
from e2e.conftest import NodeFactory
from e2e.harness import condition, eventually, get

pytestmark = pytest.mark.e2e
FLOOD = 300  # submissions, 32 at a time
LEASE = "cocoon-operator"


def ready_since(cluster: LocalCluster, node: str) -> str:
    """When the node's Ready condition last changed: a flapping verdict moves it."""
    attested = get(cluster, "attestednode.cocoon.dev", node)
    assert attested is not None and attested["status"]["verdict"] == "Verified"
    return str(condition(attested, "Ready")["lastTransitionTime"])


async def flood(
    operator: Operator, node: str, token: str, simulated: Path
) -> collections.Counter[int]:
    """Stale answers (a nonce the operator never issued, real evidence) and garbage, as a
    compromised agent holding the node's own bound token would send them."""
    sim = SimulatedTee.load(simulated)
    public = keys.public_bytes(keys.generate())
    stale = os.urandom(32)
    valid = {
        "nonce": stale.hex(),
        "publicKey": public.hex(),
        "evidence": sim.node_evidence(stale, public, gpus=1).to_dict(),
    }
    bodies: list[Any] = [valid, {"nonce": "zz", "evidence": {}}, {"junk": "x" * 4096}]
    statuses: collections.Counter[int] = collections.Counter()
    gate = asyncio.Semaphore(32)
    url = f"{operator.api_url}/attestation/v1/nodes/{node}/evidence"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=operator.tls)) as http:

        async def one(i: int) -> None:
            async with (
                gate,
                http.post(
                    url, json=bodies[i % len(bodies)], headers={"Authorization": f"Bearer {token}"}
                ) as response,
            ):
                body = await response.json()
                assert "error" in body  # every refusal says why
                statuses[response.status] += 1

        sent = asyncio.gather(*(one(i) for i in range(FLOOD)))
        # the API answers others while the flood is on
        async with http.get(f"{operator.api_url}/healthz") as health:
            assert health.status == 200
        await sent
    return statuses


def test_an_agent_flooding_the_evidence_route(
    cluster: LocalCluster, operator: Operator, nodes: NodeFactory, agents: Agents, simulated: Path
) -> None:
    nodes.add(GpuNode("ch-flood", gpus=1), GpuNode("ch-after-flood", gpus=1))
    nodes.attest("ch-flood")
    since = ready_since(cluster, "ch-flood")
    token = agents.operator_token("ch-flood").read_text().strip()

    statuses = asyncio.run(flood(operator, "ch-flood", token, simulated))

    assert sum(statuses.values()) == FLOOD
    assert set(statuses) <= {400, 409}, statuses  # refused, never appraised into a verdict
    assert statuses[409] == FLOOD // 3  # each stale nonce named as such
    assert operator.process is not None and operator.process.alive()
    assert ready_since(cluster, "ch-flood") == since  # the verdict did not flap
    nodes.attest("ch-after-flood")  # and the operator attests as before


def restart(cluster: LocalCluster, operator: Operator, name: str) -> datetime:
    """Stop one control-plane process until the operator has noticed, start it as it was;
    when the API server answered again."""
    old = next(p for p in reversed(cluster.supervisor.processes) if p.name == name)
    log = operator.process.log if operator.process is not None else None
    seen = log.stat().st_size if log is not None else 0
    old.stop()
    cluster.supervisor.processes.remove(old)

    def noticed() -> bool:  # the leader failed to renew (or already stepped down)
        assert log is not None
        with log.open("rb") as f:
            f.seek(seen)
            return b"lease renewal failed" in f.read() or not operator.process.alive()  # type: ignore[union-attr]

    eventually(noticed, timeout=60, what=f"the operator noticing {name} is down")
    cluster.supervisor.start(name, [str(a) for a in old.popen.args])
    eventually(
        lambda: cluster.kubectl("get", "--raw", "/readyz", check=False).returncode == 0,
        timeout=120,
        what=f"the API server ready again after {name} came back",
    )
    return datetime.now(UTC)


@pytest.mark.parametrize("process", ["kube-apiserver", "etcd"])
def test_control_plane_restart(
    cluster: LocalCluster, operator: Operator, nodes: NodeFactory, process: str
) -> None:
    before, after = f"ch-{process[:4]}-0", f"ch-{process[:4]}-1"
    nodes.add(GpuNode(before, gpus=1), GpuNode(after, gpus=1))
    nodes.attest(before)
    since = ready_since(cluster, before)

    back_at = restart(cluster, operator, process)

    def settled() -> bool:  # renewed its Lease since the restart, or stepped down and exited
        assert operator.process is not None
        if not operator.process.alive():
            return True
        spec = (get(cluster, "lease", LEASE, "-n", OPERATOR_NAMESPACE) or {}).get("spec") or {}
        renewed = datetime.fromisoformat(spec.get("renewTime") or "1970-01-01T00:00:00Z")
        return str(spec.get("holderIdentity")).startswith(operator.identity_prefix) and (
            renewed > back_at
        )

    eventually(settled, timeout=60, what="the operator renewing its Lease or stepping down")
    assert operator.process is not None
    if not operator.process.alive():  # it stopped acting, as designed; the Deployment restarts
        assert operator.process.popen.returncode == LOST_LEADERSHIP, operator.process.tail(40)
        operator.start()
    assert http_ok(f"{operator.api_url}/healthz", context=operator.tls)
    assert ready_since(cluster, before) == since  # no verdict lost or flapped
    nodes.attest(after)  # watches and passes work again
