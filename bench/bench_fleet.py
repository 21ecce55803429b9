"""How long the operator takes to attest a fleet of nodes from scratch, and its peak memory.

A real control plane with N kwok nodes (1 CPU TEE + 8 GPUs each) and the operator as a process;
one driver answers every challenge with simulated-TEE evidence, as N agents would. Agents use one
unbound ServiceAccount token here (the operator is told to accept it), so what is measured is the
operator: discovery, challenges, appraisal, status, labels and taints.

Run: .venv/bin/python bench/bench_fleet.py [--nodes 1000] → bench/results/fleet.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import ssl
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from cocoon import keys
from cocoon.agent.simulated import SimulatedTee
from cocoon.devstack.cluster import GpuNode, LocalCluster, ensure_binaries
from cocoon.devstack.stack import (
    OPERATOR_NAMESPACE,
    Operator,
    install_crds,
    install_security,
    operator_kubeconfig,
)
from cocoon.kube import ATTESTED_NODES, NODES, Kube

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "fleet.json"
GPUS = 8


def rss_peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def drive(
    kube: Kube, api_url: str, token: str, sim: SimulatedTee, total: int, tls: ssl.SSLContext
) -> float:
    """Answer each challenge once; return when every node is labelled attested."""
    answered: set[str] = set()
    gate = asyncio.Semaphore(8)
    keys_by_node: dict[str, bytes] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls)) as http:

        async def answer(name: str, nonce_hex: str) -> None:
            async with gate:
                public = keys_by_node.setdefault(name, keys.public_bytes(keys.generate()))
                nonce = bytes.fromhex(nonce_hex)
                evidence = sim.node_evidence(nonce, public, gpus=GPUS)
                body = {
                    "nonce": nonce_hex,
                    "publicKey": public.hex(),
                    "evidence": evidence.to_dict(),
                }
                async with http.post(
                    f"{api_url}/attestation/v1/nodes/{name}/evidence",
                    json=body,
                    headers={"Authorization": f"Bearer {token}"},
                ) as r:
                    if r.status != 200:
                        answered.discard(f"{name}/{nonce_hex}")

        while True:
            pending = []
            for item in await kube.list(ATTESTED_NODES):
                challenge = (item.get("status") or {}).get("challenge")
                key = f"{item['metadata']['name']}/{(challenge or {}).get('nonce')}"
                if challenge and key not in answered:
                    answered.add(key)
                    pending.append(answer(item["metadata"]["name"], challenge["nonce"]))
            await asyncio.gather(*pending)
            done = len(await kube.list(NODES, labels="cocoon.dev/attested=true"))
            if done >= total:
                return time.monotonic()
            await asyncio.sleep(0.5)


async def count_challenged(kube: Kube) -> int:
    return sum(
        1
        for i in await kube.list(ATTESTED_NODES)
        if (i.get("status") or {}).get("challenge")
        or (i.get("status") or {}).get("verdict") == "Verified"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=1000)
    args = parser.parse_args()
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
        os.environ["COCOON_ALLOW_UNBOUND_AGENT_TOKENS"] = "true"
        os.environ["COCOON_RESYNC_SECONDS"] = "30"
        operator = Operator(cluster, operator_kubeconfig(cluster))
        operator.start()
        token = cluster.kubectl(
            "create", "token", "cocoon-agent", "-n", OPERATOR_NAMESPACE, "--duration=2h",
            "--audience=cocoon-operator",
        ).stdout.strip()
        nodes = [GpuNode(f"fleet-{i:04d}", gpus=GPUS, tee="sev-snp") for i in range(args.nodes)]
        os.environ["KUBECONFIG"] = str(cluster.kubeconfig)

        async def run() -> dict[str, Any]:
            kube = await Kube.connect()
            try:
                start = time.monotonic()
                for batch in range(0, len(nodes), 250):
                    cluster.add_nodes(*nodes[batch : batch + 250])
                created = time.monotonic()
                finished = await drive(
                    kube, operator.api_url, token, sim, args.nodes, operator.tls
                )
                return {"create_s": created - start, "attest_s": finished - start}
            finally:
                await kube.close()

        timing = asyncio.run(run())
        assert operator.process is not None
        result = {
            "nodes": args.nodes,
            "gpus_per_node": GPUS,
            "seconds_to_all_attested": round(timing["attest_s"], 1),
            "nodes_per_second": round(args.nodes / timing["attest_s"], 1),
            "seconds_creating_nodes": round(timing["create_s"], 1),
            "operator_peak_rss_mib": round(rss_peak_mib(operator.process.pid), 1),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared by apiserver, "
            "etcd, kwok, scheduler, controller-manager, operator and driver)",
            "command": "python bench/bench_fleet.py --nodes " + str(args.nodes),
        }
        print(json.dumps(result, indent=2))
        if args.nodes >= 1000:
            OUT.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        if operator is not None:
            operator.stop()
        cluster.stop()
        cluster.remove_workdir()


if __name__ == "__main__":
    main()
