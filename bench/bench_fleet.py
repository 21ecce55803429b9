"""How long the operator takes to attest a fleet of nodes from scratch, and what it costs.

A real control plane with N kwok nodes (1 CPU TEE + 8 distinct simulated GPUs each) and the
operator as a process, with every security check on: each node's agent answers with a token
bound to its own (kwok) agent Pod, so the operator's TokenReview sees the node and refuses any
other; the policy requires all 8 GPUs. One driver answers every challenge with simulated-TEE
evidence, as N agents would.

The Node objects, agent Pods and tokens exist before the operator starts, so the clock measures
the operator alone ("N nodes attested after their Node objects exist"): from the operator's
start to each node's Verified answer (p50/p99), and to the last. Then the fleet is left to
settle and two attestation passes are counted: the operator's own API request counters
(`cocoon_kube_requests_total`) say what a pass costs once nothing changes. Operator CPU comes
from /proc, peak RSS from VmHWM. The machine's load average is recorded: on a shared machine
the wall figures move with it.

Run: .venv/bin/python bench/bench_fleet.py [--nodes 1000] → bench/results/fleet.json
(bench/results/fleet_<N>.json for other sizes)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import ssl
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from cocoon import keys
from cocoon.agent.simulated import SimulatedTee
from cocoon.controllers.httpapi import AUDIENCE
from cocoon.devstack.cluster import GpuNode, LocalCluster, ensure_binaries
from cocoon.devstack.stack import (
    OPERATOR_NAMESPACE,
    Operator,
    install_crds,
    install_security,
    operator_kubeconfig,
)
from cocoon.kube import ATTESTED_NODES as ATTESTED
from cocoon.kube import NODES, Kube

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
GPUS = 8
BATCH = 100
RESYNC_S = 30
CHART_DEFAULTS = {  # the chart's pass interval and Lease timing, not the e2e suite's short ones
    "COCOON_RESYNC_SECONDS": str(RESYNC_S),
    "COCOON_LEASE_SECONDS": "15",
    "COCOON_LEASE_RENEW_DEADLINE_SECONDS": "10",
    "COCOON_LEASE_RETRY_SECONDS": "2",
}


def proc_figures(pid: int) -> dict[str, float]:
    """Peak RSS (MiB) and CPU seconds (user + system) of a live process."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return {"rss_peak_mib": hwm / 1024, "cpu_s": (int(fields[11]) + int(fields[12])) / ticks}


def agent_pod(node: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"cocoon-agent-{node}", "namespace": OPERATOR_NAMESPACE},
        "spec": {
            "nodeName": node,
            "serviceAccountName": "cocoon-agent",
            "automountServiceAccountToken": False,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "agent", "image": "cocoon:dev"}],
        },
    }


async def bound_tokens(kube: Kube, names: list[str]) -> dict[str, str]:
    """One operator-audience token per node, bound to that node's agent Pod (TokenRequest)."""
    gate = asyncio.Semaphore(16)
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
            answer = await kube.create_cluster(path, body)
        return node, answer["status"]["token"]

    return dict(await asyncio.gather(*(one(n) for n in names)))


async def metric_sums(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """The operator's request counter (by verb and resource) and attestation pass count."""
    async with http.get(f"{url}/metrics") as response:
        text = await response.text()
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("cocoon_kube_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            sums[labels.removeprefix("cocoon_kube_requests_total")] = float(value)
        elif line.startswith('cocoon_resync_pass_seconds_count{concern="attestation"}'):
            sums["passes"] = float(line.rsplit(" ", 1)[1])
    return sums


async def drive(
    kube: Kube, api_url: str, tokens: dict[str, str], sim: SimulatedTee, tls: ssl.SSLContext
) -> dict[str, float]:
    """Answer each challenge as the node's agent would; the time each node was Verified."""
    verified: dict[str, float] = {}
    answered: set[str] = set()
    refused: dict[int, int] = {}
    gate = asyncio.Semaphore(8)
    node_keys = {name: keys.public_bytes(keys.generate()) for name in tokens}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls)) as http:

        async def answer(name: str, nonce_hex: str) -> None:
            async with gate:
                public = node_keys[name]
                evidence = sim.node_evidence(bytes.fromhex(nonce_hex), public, gpus=GPUS)
                body = {
                    "nonce": nonce_hex,
                    "publicKey": public.hex(),
                    "evidence": evidence.to_dict(),
                }
                async with http.post(
                    f"{api_url}/attestation/v1/nodes/{name}/evidence",
                    json=body,
                    headers={"Authorization": f"Bearer {tokens[name]}"},
                ) as r:
                    result = await r.json() if r.status == 200 else {}
                    if result.get("verified"):
                        verified.setdefault(name, time.monotonic())
                    else:  # busy (503) or a changed challenge (409): answer again
                        refused[r.status] = refused.get(r.status, 0) + 1
                        answered.discard(f"{name}/{nonce_hex}")

        while len(verified) < len(tokens):
            pending = []
            for item in await kube.list(ATTESTED):
                name = item["metadata"]["name"]
                challenge = (item.get("status") or {}).get("challenge")
                key = f"{name}/{(challenge or {}).get('nonce')}"
                if (item.get("status") or {}).get("verdict") == "Verified":
                    # verified by an answer whose reply was lost to us: seen here, a poll late
                    verified.setdefault(name, time.monotonic())
                if challenge and name not in verified and key not in answered:
                    answered.add(key)
                    pending.append(answer(name, challenge["nonce"]))
            await asyncio.gather(*pending)
            await asyncio.sleep(1)
    print("refused answers by status:", refused)
    return verified


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=1000)
    args = parser.parse_args()
    load_before = os.getloadavg()
    cluster = LocalCluster(Path(tempfile.mkdtemp(prefix="cocoon-fleet-")), ensure_binaries())
    cluster.start()
    operator = None
    try:
        install_crds(cluster)
        install_security(cluster)
        sim = SimulatedTee.generate(now=datetime.now(UTC))
        policy = {
            "apiVersion": "cocoon.dev/v1alpha1",
            "kind": "AttestationPolicy",
            "metadata": {"name": "default"},
            "spec": sim.policy_spec(gpu={"required": True, "minCount": GPUS}).to_api(),
        }
        cluster.apply(policy)
        names = [f"fleet-{i:05d}" for i in range(args.nodes)]
        setup = time.monotonic()
        for batch in range(0, len(names), BATCH):
            cluster.add_nodes(
                *(GpuNode(n, gpus=GPUS, tee="sev-snp") for n in names[batch : batch + BATCH])
            )
            docs = "\n---\n".join(json.dumps(agent_pod(n)) for n in names[batch : batch + BATCH])
            cluster.kubectl("create", "-f", "-", input=docs)
        os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
        operator = Operator(cluster, operator_kubeconfig(cluster), env=CHART_DEFAULTS)

        async def run() -> dict[str, Any]:
            kube = await Kube.connect()
            try:
                tokens = await bound_tokens(kube, names)
                setup_s = time.monotonic() - setup
                start = time.monotonic()
                operator.start()
                assert operator.process is not None
                cpu_start = proc_figures(operator.process.pid)["cpu_s"]
                verified = await drive(kube, operator.api_url, tokens, sim, operator.tls)
                last = max(verified.values())
                attested = len(await kube.list(NODES, labels="cocoon.dev/attested=true"))
                cpu_attest = proc_figures(operator.process.pid)["cpu_s"] - cpu_start
                tls = aiohttp.TCPConnector(ssl=operator.tls)
                async with aiohttp.ClientSession(connector=tls) as http:
                    before = await metric_sums(http, operator.api_url)
                    after = before
                    while after.get("passes", 0) < before.get("passes", 0) + 2:
                        await asyncio.sleep(2)
                        after = await metric_sums(http, operator.api_url)
                passes = after["passes"] - before.get("passes", 0)
                # Lease renewals run on their own clock, whatever the fleet: kept apart
                per_pass = {
                    k: round((after[k] - before.get(k, 0)) / passes, 1)
                    for k in after
                    if k != "passes" and after[k] != before.get(k, 0)
                }
                latencies = [t - start for t in verified.values()]
                return {
                    "setup_s": setup_s,
                    "attest_s": last - start,
                    "attested_labels": attested,
                    "p50": statistics.median(latencies),
                    "p99": percentile(latencies, 0.99),
                    "cpu_attest_s": cpu_attest,
                    "requests_during_attestation": {
                        k: v for k, v in before.items() if k != "passes"
                    },
                    "requests_per_settled_pass": per_pass,
                    "figures": proc_figures(operator.process.pid),
                }
            finally:
                await kube.close()

        timing = asyncio.run(run())
        total_requests = sum(timing["requests_during_attestation"].values())
        result = {
            "nodes": args.nodes,
            "gpus_per_node": GPUS,
            "security": "every check on: per-node tokens bound to each node's agent Pod "
            "(COCOON_ALLOW_UNBOUND_AGENT_TOKENS unset), policy requires 8 distinct GPUs",
            "clock": "from the operator's start; every Node, agent Pod and token existed before",
            "seconds_to_all_verified": round(timing["attest_s"], 1),
            "nodes_per_second": round(args.nodes / timing["attest_s"], 1),
            "verified_p50_s": round(timing["p50"], 1),
            "verified_p99_s": round(timing["p99"], 1),
            "nodes_labelled_attested": timing["attested_labels"],
            "operator_cpu_seconds_attesting": round(timing["cpu_attest_s"], 1),
            "operator_cpu_cores_attesting": round(timing["cpu_attest_s"] / timing["attest_s"], 2),
            "operator_peak_rss_mib": round(timing["figures"]["rss_peak_mib"], 1),
            "api_requests_attesting_total": int(total_requests),
            "api_requests_attesting_per_node": round(total_requests / args.nodes, 1),
            "api_requests_attesting": timing["requests_during_attestation"],
            "api_requests_per_settled_pass": {
                k: v for k, v in timing["requests_per_settled_pass"].items() if "leases" not in k
            },
            "lease_requests_per_pass_interval": {
                k: v for k, v in timing["requests_per_settled_pass"].items() if "leases" in k
            },
            "resync_seconds": RESYNC_S,
            "seconds_creating_nodes_pods_tokens": round(timing["setup_s"], 1),
            "load_average_before": [round(x, 1) for x in load_before],
            "load_average_after": [round(x, 1) for x in os.getloadavg()],
            "machine": f"{platform.machine()}, {os.cpu_count()} cores shared by apiserver, "
            "etcd, kwok, scheduler, controller-manager, operator, driver and other agents' work",
            "command": f"python bench/bench_fleet.py --nodes {args.nodes}",
        }
        print(json.dumps(result, indent=2))
        out = RESULTS / ("fleet.json" if args.nodes == 1000 else f"fleet_{args.nodes}.json")
        out.write_text(json.dumps(result, indent=2) + "\n")
    except BaseException:
        if operator is not None and operator.process is not None:
            print(operator.process.tail(60))
        raise
    finally:
        if operator is not None:
            operator.stop()
        cluster.stop()
        cluster.remove_workdir()


if __name__ == "__main__":
    main()
