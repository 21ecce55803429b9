"""What `bench_fleet.py` reads off the processes it runs: CPU and peak memory from /proc, the
operator's and the API server's request counters, the load average, a heartbeat round's cost."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from fleet_setup import heartbeat_round

from cocoon.controllers.cache import Store
from cocoon.devstack.cluster import LocalCluster
from cocoon.kube import Kube


def proc_figures(pid: int) -> dict[str, float]:
    """Peak RSS (MiB) and CPU seconds (user + system) of a live process."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return {"rss_peak_mib": hwm / 1024, "cpu_s": (int(fields[11]) + int(fields[12])) / ticks}


def control_plane_cpu(cluster: LocalCluster) -> dict[str, float]:
    """CPU seconds so far of each control-plane process (API server, etcd, kwok, ...)."""
    return {
        p.name: proc_figures(p.pid)["cpu_s"] for p in cluster.supervisor.processes if p.alive()
    }


def apiserver_requests(cluster: LocalCluster) -> dict[str, float]:
    """The API server's own request counter (`apiserver_request_total`), every client's, by
    verb and resource[/subresource]: the operator's, kwok's, kcm's and the driver's."""
    sums: dict[str, float] = {}
    for line in cluster.kubectl("get", "--raw", "/metrics").stdout.splitlines():
        if line.startswith("apiserver_request_total{"):
            labels, value = line.rsplit(" ", 1)
            tags = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            sub = f"/{tags['subresource']}" if tags.get("subresource") else ""
            key = f"{tags.get('verb')} {tags.get('resource') or tags.get('subresource')}{sub}"
            sums[key] = sums.get(key, 0.0) + float(value)
    return sums


def grown(after: Mapping[str, float], before: Mapping[str, float]) -> dict[str, int]:
    """What rose between two counter snapshots, largest first."""
    rises = {k: int(v - before.get(k, 0.0)) for k, v in after.items()}
    return dict(sorted(((k, v) for k, v in rises.items() if v > 0), key=lambda kv: -kv[1]))


NOT_REQUESTS = ("passes", "node_events")


async def metric_sums(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """The operator's request counter (by verb and resource), its attestation pass count and
    the Node watch events it has received."""
    async with http.get(f"{url}/metrics") as response:
        text = await response.text()
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("cocoon_kube_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            sums[labels.removeprefix("cocoon_kube_requests_total")] = float(value)
        elif line.startswith('cocoon_resync_pass_seconds_count{concern="attestation"}'):
            sums["passes"] = float(line.rsplit(" ", 1)[1])
        elif line.startswith('cocoon_watch_events_total{resource="nodes",type="MODIFIED"}'):
            sums["node_events"] = float(line.rsplit(" ", 1)[1])
    return sums


async def sample_load(into: list[float]) -> None:
    """The machine's 1-minute load average every 5 s while the operator works."""
    while True:
        into.append(os.getloadavg()[0])
        await asyncio.sleep(5)


async def measure_heartbeats(
    kube: Kube,
    nodes: Store,
    sums: Callable[[], Awaitable[dict[str, float]]],
    operator_cpu: Callable[[], float],
    idle_rate: float,
) -> dict[str, Any]:
    """What one status heartbeat from every node costs the settled operator: its CPU beyond
    what it spends idle (`idle_rate`, CPU-s per second, measured over the settled passes just
    before), and the API requests it makes (none is the goal: a heartbeat changes nothing it
    decides on). Waits until the operator's Node watch has delivered every one."""
    before, cpu, start = await sums(), operator_cpu(), time.monotonic()
    await heartbeat_round(kube, nodes)
    after = before
    while after.get("node_events", 0) < before.get("node_events", 0) + len(nodes):
        await asyncio.sleep(0.5)
        after = await sums()
    seconds, spent = time.monotonic() - start, operator_cpu() - cpu
    requests = {
        k: after[k] - before.get(k, 0)
        for k in after
        if k not in NOT_REQUESTS and "leases" not in k and after[k] != before.get(k, 0)
    }
    passes = after.get("passes", 0) - before.get("passes", 0)
    return {
        "how": "the driver patches every Node's status conditions with a new lastHeartbeatTime "
        "(what kwok's node-heartbeat stage, stretched for this run, and a kubelet do), and waits "
        "for the operator's Node watch to deliver them all",
        "heartbeats": len(nodes),
        "seconds": round(seconds, 1),
        "operator_cpu_seconds": round(spent, 2),
        "operator_idle_cpu_seconds_per_second": round(idle_rate, 4),
        "operator_cpu_ms_per_heartbeat_beyond_idle": round(
            max(0.0, spent - idle_rate * seconds) / len(nodes) * 1000, 3
        ),
        "operator_api_requests_besides_leases": requests,
        "attestation_passes_meanwhile": passes,
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]
