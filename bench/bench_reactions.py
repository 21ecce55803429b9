"""Reaction times on the real control plane: how fast the operator turns a change into effect.

One local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok), the
operator as a process, real node agents with the simulated TEE. Each figure is the time between
two states as observed by one poller on the API (every 50 ms, so ±0.1 s), over repeated runs:

- pool Ready: an InferencePool's pods are Running and Ready (kwok) → the pool's Ready=True;
- placement: a node's agent is answered and the node is labelled attested → a pending replica
  of a waiting pool is bound to it;
- lapse: a node's verdict expires (its agent stopped; `expiresAt`, whole seconds) → the
  NoExecute taint is on the Node → the pool pod on it is gone (the taint eviction controller).

Usage report → credit visible to the meter needs the chain emulator and a funded channel:
bench_credit_reaction.py measures it and writes its entry (CREDIT_KEY) into the same file,
which this script keeps when it rewrites the rest.

Run: .venv/bin/python bench/bench_reactions.py [--runs 8] → bench/results/reactions.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from cocoon.agent.simulated import DEFAULT_MEASUREMENT
from cocoon.devstack.agents import Agents, simulated_policy, simulated_tee
from cocoon.devstack.binaries import ensure_binaries
from cocoon.devstack.cluster import LocalCluster
from cocoon.devstack.gpunode import GpuNode
from cocoon.devstack.stack import Operator, install_crds, install_security, operator_kubeconfig
from cocoon.kube import ATTESTED_NODES as ATTESTED
from cocoon.kube import INFERENCE_POOLS, NODES, PODS, Kube

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "reactions.json"
NAMESPACE = "bench"
POLL_S = 0.05
UNATTESTED = "cocoon.dev/unattested"
CREDIT_KEY = "usage_report_to_meter_credit"  # bench_credit_reaction.py's entry


def pool(name: str, replicas: int, gpus: int) -> dict[str, Any]:
    return {
        "apiVersion": "cocoon.dev/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "model": {
                "name": "add",
                "repository": {
                    "initContainer": {
                        "image": {"repository": "registry.example/models", "tag": "add-1"},
                        "command": ["cp", "-r", "/add", "/models/"],
                    }
                },
            },
            "replicas": replicas,
            "gpusPerReplica": gpus,
            "teeTypes": ["sev-snp"],
            "price": {"perRequest": "1000", "perOutputToken": "20"},
        },
    }


async def when(check: Callable[[], Awaitable[bool]]) -> float:
    """The monotonic time `check` first held (polled every POLL_S, for at most 3 minutes)."""
    async with asyncio.timeout(180):
        while True:
            if await check():
                return time.monotonic()
            await asyncio.sleep(POLL_S)


def ready(obj: dict[str, Any] | None) -> bool:
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


async def pool_pods(kube: Kube, name: str) -> list[dict[str, Any]]:
    pods = await kube.list(PODS, NAMESPACE, labels=f"cocoon.dev/pool={name}")
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def summary(samples: list[float]) -> dict[str, Any]:
    ordered = sorted(samples)
    return {
        "p50_s": round(statistics.median(ordered), 2),
        "p99_s": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
        "max_s": round(ordered[-1], 2),
        "runs": len(ordered),
        "samples_s": [round(s, 2) for s in samples],
    }


async def pool_ready_runs(kube: Kube, runs: int) -> list[float]:
    """Pods Running and Ready → pool Ready, one 1-GPU pool at a time."""
    samples = []
    for i in range(runs):
        name = f"ready-{i}"
        await kube.create(INFERENCE_POOLS, pool(name, 1, 1))

        async def pods_ready(name: str = name) -> bool:
            pods = await pool_pods(kube, name)
            return len(pods) == 1 and ready(pods[0])

        async def pool_ready(name: str = name) -> bool:
            return ready(await kube.get_or_none(INFERENCE_POOLS, name, NAMESPACE))

        running = await when(pods_ready)
        samples.append(max(0.0, await when(pool_ready) - running))
        await kube.delete(INFERENCE_POOLS, name, NAMESPACE)
    return samples


async def placement_and_lapse(
    kube: Kube, cluster: LocalCluster, agents: Agents, nodes: list[str]
) -> dict[str, list[float]]:
    """A waiting pool, nodes attested one by one, then every agent stopped until verdicts lapse."""
    await kube.create(INFERENCE_POOLS, pool("wait", len(nodes), 8))
    placed: list[float] = []
    for node in nodes:
        agents.start(node, "--gpus", "8")

        async def attested(node: str = node) -> bool:
            labels = (await kube.get(NODES, node))["metadata"].get("labels") or {}
            return labels.get("cocoon.dev/attested") == "true"

        async def bound(node: str = node) -> bool:
            return any(p["spec"].get("nodeName") == node for p in await pool_pods(kube, "wait"))

        at = await when(attested)
        placed.append(await when(bound) - at)
    for node in nodes:
        agents.stop(node)
    expires = {
        node: datetime.fromisoformat(
            (await kube.get(ATTESTED, node))["status"]["expiresAt"]
        ).timestamp()
        for node in nodes
    }
    # one poller watches every node at once (wall clock: expiresAt is wall-clock time)
    tainted_at: dict[str, float] = {}
    evicted_at: dict[str, float] = {}
    async with asyncio.timeout(240):
        while len(evicted_at) < len(nodes):
            now = time.time()
            for item in await kube.list(NODES):
                name = item["metadata"]["name"]
                taints = item["spec"].get("taints") or []
                if name in expires and any(
                    t["key"] == UNATTESTED and t["effect"] == "NoExecute" for t in taints
                ):
                    tainted_at.setdefault(name, now)
            occupied = {p["spec"].get("nodeName") for p in await pool_pods(kube, "wait")}
            for name in tainted_at:
                if name not in occupied:
                    evicted_at.setdefault(name, now)
            await asyncio.sleep(POLL_S)
    tainted = [max(0.0, tainted_at[n] - expires[n]) for n in nodes]
    evicted = [max(0.0, evicted_at[n] - expires[n]) for n in nodes]
    return {"placed": placed, "tainted": tainted, "evicted": evicted}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=8)
    args = parser.parse_args()
    load_before = os.getloadavg()
    cluster = LocalCluster(Path(tempfile.mkdtemp(prefix="cocoon-react-")), ensure_binaries())
    cluster.start()
    operator = agents = None
    try:
        install_crds(cluster)
        install_security(cluster)
        simulated = simulated_tee(cluster.workdir / "sim")
        cluster.apply(
            simulated_policy(
                simulated,
                gpus=8,
                snp={"measurements": [DEFAULT_MEASUREMENT.hex()]},
                reattestIntervalSeconds=30,
                verdictLifetimeSeconds=60,
            )
        )
        cluster.kubectl("create", "namespace", NAMESPACE)
        names = [f"react-{i}" for i in range(args.runs)]
        cluster.add_nodes(*(GpuNode(n, gpus=8, tee="sev-snp") for n in names))
        cluster.add_nodes(GpuNode("react-pool", gpus=8, tee="sev-snp"))
        operator = Operator(cluster, operator_kubeconfig(cluster))
        operator.start()
        agents = Agents(cluster, operator, simulated)
        os.environ["KUBECONFIG"] = str(cluster.kubeconfig)

        async def run() -> dict[str, list[float]]:
            kube = await Kube.connect()
            try:
                agents.start("react-pool", "--gpus", "8")

                async def pool_node() -> bool:
                    node = await kube.get(NODES, "react-pool")
                    return (node["metadata"].get("labels") or {}).get(
                        "cocoon.dev/attested"
                    ) == "true"

                await when(pool_node)
                ready_samples = await pool_ready_runs(kube, args.runs)
                agents.stop("react-pool")
                return {"ready": ready_samples} | await placement_and_lapse(
                    kube, cluster, agents, names
                )
            finally:
                await kube.close()

        samples = asyncio.run(run())
        result = {
            "pool_pods_ready_to_pool_ready": summary(samples["ready"]),
            "node_attested_to_pending_replica_placed": summary(samples["placed"]),
            "verdict_expired_to_noexecute_taint": summary(samples["tainted"]),
            "verdict_expired_to_pod_evicted": summary(samples["evicted"]),
            "goals": {"pool_ready_p50_s": 2, "lapse_to_taint_s": 5},
            "method": "one poller on the API every 50 ms (±0.1 s); lapse measured from the "
            "verdict's expiresAt (whole seconds); operator pass interval 2 s (devstack), "
            "level-triggered watches for the rest",
            "load_average_before": [round(x, 1) for x in load_before],
            "load_average_after": [round(x, 1) for x in os.getloadavg()],
            "machine": f"{os.cpu_count()} cores shared by the control plane, operator, agents, "
            "the poller and other agents' work",
            "command": f"python bench/bench_reactions.py --runs {args.runs}",
        }
        print(json.dumps(result, indent=2))
        previous = json.loads(OUT.read_text()) if OUT.exists() else {}
        if CREDIT_KEY in previous:
            result[CREDIT_KEY] = previous[CREDIT_KEY]
        OUT.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        if agents is not None:
            agents.stop_all()
        if operator is not None:
            operator.stop()
        cluster.stop()
        cluster.remove_workdir()


if __name__ == "__main__":
    main()
