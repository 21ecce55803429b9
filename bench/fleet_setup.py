"""The simulated fleet for `bench_fleet.py`: N kwok Nodes with 8 GPUs each, each node's agent
Pod and a token bound to it, made by concurrent API calls; waiting until kwok has made them all
Ready; and the status heartbeats a kubelet posts."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from cocoon.controllers.cache import Store
from cocoon.controllers.httpapi import AUDIENCE
from cocoon.controllers.views import Informer
from cocoon.devstack.agents import agent_pod
from cocoon.devstack.gpunode import GpuNode
from cocoon.devstack.stack import OPERATOR_NAMESPACE
from cocoon.kube import NODES, PODS, Kube, Obj

GPUS = 8
CREATORS = 32  # nodes set up at once (Node, agent Pod, token: three calls each)


async def create_fleet(kube: Kube, names: list[str]) -> dict[str, str]:
    """Each node's Node, agent Pod and operator-audience token bound to that Pod (a
    TokenRequest), CREATORS nodes at a time; returns the tokens."""
    gate = asyncio.Semaphore(CREATORS)
    path = f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/serviceaccounts/cocoon-agent/token"

    async def one(node: str) -> tuple[str, str]:
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [AUDIENCE],
                "expirationSeconds": 7200,
                "boundObjectRef": {
                    "kind": "Pod",
                    "apiVersion": "v1",
                    "name": f"cocoon-agent-{node}",
                },
            },
        }
        async with gate:
            await kube.create(NODES, GpuNode(node, gpus=GPUS, tee="sev-snp").manifest())
            await kube.create(PODS, agent_pod(node))
            answer = await kube.create_cluster(path, body)
        return node, answer["status"]["token"]

    return dict(await asyncio.gather(*(one(n) for n in names)))


def settled(obj: Obj) -> bool:
    """kwok has made the Node or Pod Ready, and (a Node) the node lifecycle controller has
    lifted its not-ready taint: it no longer changes by itself."""
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )
    taints = (obj.get("spec") or {}).get("taints") or []
    return ready and not any(t.get("key", "").startswith("node.kubernetes.io/") for t in taints)


async def fleet_ready(kube: Kube, count: int) -> Store:
    """Until every fake node is Ready and untainted and every agent Pod Ready, as an agent is
    before it can answer a challenge (kwok initialises 10,000 of each in minutes; its pods lag
    its nodes, and it was still making them Ready, at a cost of ~190 CPU-s, while the operator
    attested 10,000 nodes). Followed by list-and-watch: listing 10,000 Nodes every few seconds
    slowed the API server that was initialising them. Returns what it saw of each node."""
    nodes, pods = Informer(NODES, Store(readiness)), Informer(PODS, Store(readiness))
    tasks = [asyncio.create_task(view.run(kube)) for view in (nodes, pods)]
    try:
        while True:
            ready = sum(1 for n in nodes.store if settled(n))
            running = sum(1 for p in pods.store if settled(p))
            if ready >= count and running >= count:
                break
            load = os.getloadavg()[0]
            print(f"{ready}/{count} nodes, {running} agent Pods Ready, load {load:.1f}")
            await asyncio.sleep(5)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return nodes.store


async def heartbeat_round(kube: Kube, nodes: Store) -> None:
    """One status heartbeat per node, as a kubelet posts every few minutes (kwok's, stretched
    for the run, would have): each Node's conditions again with a new lastHeartbeatTime."""
    gate = asyncio.Semaphore(CREATORS)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    async def one(node: Obj) -> None:
        conditions = [{**c, "lastHeartbeatTime": now} for c in node["status"]["conditions"]]
        async with gate:
            await kube.patch(
                NODES, node["metadata"]["name"], {"status": {"conditions": conditions}},
                subresource="status",
            )

    await asyncio.gather(*(one(n) for n in nodes))


def readiness(node: Mapping[str, Any]) -> Obj:
    """What `settled` reads of a Node or Pod (10,000 whole Nodes would cost the driver ~100 MiB)."""
    meta = node.get("metadata") or {}
    return {
        "metadata": {"name": meta.get("name"), "resourceVersion": meta.get("resourceVersion")},
        "spec": {"taints": (node.get("spec") or {}).get("taints") or []},
        "status": {"conditions": (node.get("status") or {}).get("conditions") or []},
    }
