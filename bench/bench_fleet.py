"""How long the operator takes to attest a fleet of nodes from scratch, and what it costs.

A real control plane with N kwok nodes (1 CPU TEE + 8 distinct simulated GPUs each) and the
operator as a process, with every security check on: each node's agent answers with a token
bound to its own (kwok) agent Pod, so the operator's TokenReview sees the node and refuses any
other; the policy requires all 8 GPUs. One driver answers every challenge with simulated-TEE
evidence, as N agents would.

The Node objects, agent Pods and tokens exist, and kwok has made every Node and agent Pod Ready,
before the operator starts, so the clock measures the operator alone ("N nodes attested after
their Node objects exist"): from the operator's start to each node's Verified answer (p50/p99),
and to the last. The driver creates them with
concurrent API calls and follows the AttestedNodes with a list-and-watch (the operator's own
`views.Informer`), as N agents would, instead of listing the fleet every second. kwok's node
Leases last four hours here (renewed hourly) and its node status heartbeats come as rarely, so
no simulated kubelet renews or heartbeats while a run lasts: 10,000 simulated kubelets' renewals
would take the 2 cores the API server and the operator share with them, where a real fleet's
kubelets run on their own machines. (With hour-long Leases, renewed every 15 min, the 10,000
renewed while the operator attested: 11 Lease writes and 11 Node status writes a second, each
sent to every Node watcher.) The CPU seconds of every process are reported, kwok's included.

Then the fleet is left to settle and two attestation passes are counted: the operator's own API
request counters (`cocoon_kube_requests_total`) say what a pass costs once nothing changes. What
the operator pays for the heartbeats left out of the clock is measured apart: the driver posts
one status heartbeat per node and the operator's CPU and API requests are counted until its
Node watch has delivered them all (`cocoon_watch_events_total`).
Operator CPU comes from /proc, peak RSS from VmHWM. The machine's 1-minute load average is
sampled through the run: on a shared machine the wall figures move with it.

Run: .venv/bin/python bench/bench_fleet.py [--nodes 1000] → bench/results/fleet.json
(bench/results/fleet_<N>.json for other sizes)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from fleet_agents import Agents
from fleet_figures import (
    NOT_REQUESTS,
    apiserver_requests,
    control_plane_cpu,
    grown,
    measure_heartbeats,
    metric_sums,
    percentile,
    proc_figures,
    sample_load,
)
from fleet_setup import GPUS, create_fleet, fleet_ready

from cocoon.agent.simulated import SimulatedTee
from cocoon.devstack.binaries import ensure_binaries
from cocoon.devstack.cluster import LocalCluster
from cocoon.devstack.stack import (
    Operator,
    install_crds,
    install_security,
    operator_kubeconfig,
)
from cocoon.kube import ATTESTATION_POLICIES, NODES, Kube

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
LEASE_S = 4 * 3600  # kwok's node Leases (renewed hourly, not every 10 s) and heartbeats
RESYNC_S = 30
REATTEST_S = 30  # the policy's smallest re-attestation interval, for the re-attestation round

CHART_DEFAULTS = {  # the chart's pass interval and Lease timing, not the e2e suite's short ones
    "COCOON_RESYNC_SECONDS": str(RESYNC_S),
    "COCOON_LEASE_SECONDS": "15",
    "COCOON_LEASE_RENEW_DEADLINE_SECONDS": "10",
    "COCOON_LEASE_RETRY_SECONDS": "2",
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument(
        "--no-reattest", action="store_true", help="skip the measured re-attestation round"
    )
    args = parser.parse_args()
    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="cocoon-fleet-"))
    cluster = LocalCluster(
        workdir, ensure_binaries(), node_lease_seconds=LEASE_S, node_heartbeat_seconds=LEASE_S
    )
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
        os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
        operator = Operator(cluster, operator_kubeconfig(cluster), env=CHART_DEFAULTS)

        async def run() -> dict[str, Any]:
            kube = await Kube.connect()
            try:
                tokens = await create_fleet(kube, names)
                seen = await fleet_ready(kube, len(names))
                setup_s = time.monotonic() - setup
                print(f"{len(tokens)} Nodes, agent Pods and tokens in {setup_s:.1f} s")
                served_start = apiserver_requests(cluster)
                start = time.monotonic()
                operator.start()
                assert operator.process is not None
                pid = operator.process.pid

                def operator_cpu() -> float:
                    return proc_figures(pid)["cpu_s"]

                cpu_start = operator_cpu()
                plane_start = control_plane_cpu(cluster)
                driver_start = sum(os.times()[:2])
                sampler = asyncio.create_task(sample_load(loads))
                agents = Agents(kube, operator.api_url, tokens, sim, operator.tls)
                try:
                    await agents.until(lambda: len(agents.first_verified) >= len(tokens))
                    verified = agents.first_verified
                    last = max(verified.values())
                    cpu_attest = operator_cpu() - cpu_start
                    plane = {
                        name: round(cpu - plane_start.get(name, 0.0), 1)
                        for name, cpu in control_plane_cpu(cluster).items()
                    }
                    plane["driver (every agent's evidence)"] = round(
                        sum(os.times()[:2]) - driver_start, 1
                    )
                    served = grown(apiserver_requests(cluster), served_start)
                    attested = len(await kube.list(NODES, labels="cocoon.dev/attested=true"))
                    tls = aiohttp.TCPConnector(ssl=operator.tls)
                    async with aiohttp.ClientSession(connector=tls) as http:
                        before = await metric_sums(http, operator.api_url)
                        idle_cpu, idle_start = operator_cpu(), time.monotonic()
                        after = before
                        while after.get("passes", 0) < before.get("passes", 0) + 2:
                            await asyncio.sleep(2)
                            after = await metric_sums(http, operator.api_url)
                        idle_rate = (operator_cpu() - idle_cpu) / (time.monotonic() - idle_start)
                        heartbeats = await measure_heartbeats(
                            kube, seen, lambda: metric_sums(http, operator.api_url),
                            operator_cpu, idle_rate,
                        )
                        re_before = await metric_sums(http, operator.api_url)
                        re_s, re_cpu, re_count, re_after = 0.0, 0.0, 0, re_before
                        if not args.no_reattest:
                            # the policy now wants every node challenged again after
                            # REATTEST_S: its change has the leader re-check every node at once
                            await asyncio.sleep(
                                max(0.0, REATTEST_S - (time.monotonic() - last))
                            )
                            verdicts = agents.verifications
                            cpu_before = operator_cpu()
                            re_start = time.monotonic()
                            await kube.patch(
                                ATTESTATION_POLICIES,
                                "default",
                                {"spec": {"reattestIntervalSeconds": REATTEST_S}},
                            )
                            await agents.until(
                                lambda: agents.verifications >= verdicts + len(tokens)
                            )
                            re_s = time.monotonic() - re_start
                            re_cpu = operator_cpu() - cpu_before
                            re_count = agents.verifications - verdicts
                            re_after = await metric_sums(http, operator.api_url)
                finally:
                    await agents.close()
                sampler.cancel()
                passes = after["passes"] - before.get("passes", 0)
                # Lease renewals run on their own clock, whatever the fleet: kept apart
                per_pass = {
                    k: round((after[k] - before.get(k, 0)) / passes, 1)
                    for k in after
                    if k not in NOT_REQUESTS and after[k] != before.get(k, 0)
                }
                per_reattestation = {
                    k: round((re_after[k] - re_before.get(k, 0)) / max(re_count, 1), 2)
                    for k in re_after
                    if k not in NOT_REQUESTS
                    and "leases" not in k
                    and re_after[k] != re_before.get(k, 0)
                }
                latencies = [t - start for t in verified.values()]
                return {
                    "setup_s": setup_s,
                    "attest_s": last - start,
                    "attested_labels": attested,
                    "p50": statistics.median(latencies),
                    "p99": percentile(latencies, 0.99),
                    "cpu_attest_s": cpu_attest,
                    "plane_cpu_s": plane,
                    "served": served,
                    "requests_during_attestation": {
                        k: v for k, v in before.items() if k not in NOT_REQUESTS
                    },
                    "requests_per_settled_pass": per_pass,
                    "reattest_s": re_s,
                    "reattest_count": re_count,
                    "reattest_cpu_s": re_cpu,
                    "requests_per_reattestation": per_reattestation,
                    "heartbeats": heartbeats,
                    "figures": proc_figures(operator.process.pid),
                }
            finally:
                await kube.close()

        loads: list[float] = []
        timing = asyncio.run(run())
        total_requests = sum(timing["requests_during_attestation"].values())
        result = {
            "nodes": args.nodes,
            "gpus_per_node": GPUS,
            "security": "every check on: per-node tokens bound to each node's agent Pod "
            "(COCOON_ALLOW_UNBOUND_AGENT_TOKENS unset), policy requires 8 distinct GPUs",
            "clock": "from the operator's start; every Node (Ready), agent Pod (Ready) and token "
            "existed before",
            "seconds_to_all_verified": round(timing["attest_s"], 1),
            "nodes_per_second": round(args.nodes / timing["attest_s"], 1),
            "verified_p50_s": round(timing["p50"], 1),
            "verified_p99_s": round(timing["p99"], 1),
            "nodes_labelled_attested": timing["attested_labels"],
            "operator_cpu_seconds_attesting": round(timing["cpu_attest_s"], 1),
            "operator_cpu_cores_attesting": round(timing["cpu_attest_s"] / timing["attest_s"], 2),
            "operator_cpu_seconds_per_node": round(timing["cpu_attest_s"] / args.nodes, 3),
            "other_cpu_seconds_attesting": timing["plane_cpu_s"],
            "operator_peak_rss_mib": round(timing["figures"]["rss_peak_mib"], 1),
            "api_requests_attesting_total": int(total_requests),
            "api_requests_attesting_per_node": round(total_requests / args.nodes, 1),
            "api_requests_attesting": timing["requests_during_attestation"],
            "apiserver_requests_attesting_every_client": timing["served"],
            "api_requests_per_settled_pass": {
                k: v for k, v in timing["requests_per_settled_pass"].items() if "leases" not in k
            },
            "lease_requests_per_pass_interval": {
                k: v for k, v in timing["requests_per_settled_pass"].items() if "leases" in k
            },
            "reattestation": "not run (--no-reattest)"
            if args.no_reattest
            else {
                "how": f"the policy's reattestIntervalSeconds set to {REATTEST_S} once all were "
                "Verified and settled: the policy's change has the leader re-check every node, "
                "all are due; counted until as many Verified verdicts as nodes had arrived",
                "seconds": round(timing["reattest_s"], 1),
                "verdicts": timing["reattest_count"],
                "verdicts_per_second": round(timing["reattest_count"] / timing["reattest_s"], 1),
                "operator_cpu_seconds_per_verdict": round(
                    timing["reattest_cpu_s"] / timing["reattest_count"], 3
                ),
                "api_requests_per_reattested_node": timing["requests_per_reattestation"],
                "api_requests_per_reattested_node_total": round(
                    sum(timing["requests_per_reattestation"].values()), 2
                ),
            },
            "node_status_heartbeats": timing["heartbeats"],
            "resync_seconds": RESYNC_S,
            "seconds_creating_nodes_pods_tokens_until_ready": round(timing["setup_s"], 1),
            "load_average_before": [round(x, 1) for x in load_before],
            "load_average_1min_range_during_run": [round(min(loads), 1), round(max(loads), 1)],
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
