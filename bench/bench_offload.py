"""Where evidence appraisal should run so the operator's event loop stays responsive.

The operator appraises evidence inside aiohttp handlers; run inline, a burst of appraisals holds
the loop (lease renewals, the HTTP API) for the whole burst. This measures, for a burst of
whole-node appraisals (1 real TDX quote + 8 simulated GPUs with RIMs, as bench_attestation.py):
the event loop's worst and p99 lag (a 10 ms ticker) and the burst's wall time, with appraisal
inline, in a thread pool, and in a process pool. A process pool cannot take the Policy as an
argument (cryptography's Certificate objects do not pickle), so its workers build the policy
once in an initializer: the best case for processes.

Run: .venv/bin/python bench/bench_offload.py  → prints a table, writes
bench/results/offload.json.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from bench_attestation import whole_node_and_policy

from cocoon.attestation import appraisal
from cocoon.attestation.evidence import NodeEvidence
from cocoon.attestation.policy import Policy

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "attestation"
OUT = ROOT / "bench" / "results" / "offload.json"
AT = 1752919234
BURST = int(os.environ.get("BENCH_BURST", "40"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
_NODE: list[tuple[NodeEvidence, Policy]] = []  # this process's node and policy


def _build() -> tuple[NodeEvidence, Policy]:
    # no fixed seeds: every process builds its own simulated platform, which is as costly to
    # appraise as any other
    quote = (DATA / "tdx/tdx_quote.bin").read_bytes()
    collateral = (DATA / "tdx/tdx_quote.collateral.json").read_text()
    return whole_node_and_policy(quote, collateral, AT)


def _init_worker() -> None:
    _NODE[:] = [_build()]


def _appraise_here() -> bool:
    node, policy = _NODE[0]
    cpu = appraisal.appraise_cpu(node.cpu, policy, now=AT, report_data=None)
    gpus = appraisal.appraise_gpus(node.gpus, policy, now=AT, nonce=None)
    return cpu.reason is None and all(d.reason is None for d in gpus)


async def _burst(mode: str, pool: concurrent.futures.Executor | None) -> dict[str, Any]:
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            start = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append((time.perf_counter() - start - 0.01) * 1000)

    loop = asyncio.get_running_loop()
    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    start, cpu = time.perf_counter(), time.process_time()

    async def one() -> bool:
        if pool is None:
            await asyncio.sleep(0)
            return _appraise_here()
        return await loop.run_in_executor(pool, _appraise_here)

    results = await asyncio.gather(*(one() for _ in range(BURST)))
    wall = time.perf_counter() - start
    done.set()
    await tick
    assert all(results)
    lags.sort()
    return {
        "mode": mode,
        "burst": BURST,
        "workers": 0 if pool is None else WORKERS,
        "wall_s": round(wall, 3),
        "appraisals_per_s": round(BURST / wall, 1),
        "loop_lag_max_ms": round(lags[-1], 1),
        "loop_lag_p99_ms": round(lags[int(len(lags) * 0.99) - 1], 1),
        "loop_ticks": len(lags),
        "main_process_cpu_s": round(time.process_time() - cpu, 3),
    }


async def _main() -> list[dict[str, Any]]:
    _init_worker()
    _appraise_here()
    rows = [await _burst("inline", None)]
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as threads:
        await asyncio.get_running_loop().run_in_executor(threads, _appraise_here)
        rows.append(await _burst("threads", threads))
    with concurrent.futures.ProcessPoolExecutor(WORKERS, initializer=_init_worker) as procs:
        for _ in range(WORKERS * 2):
            await asyncio.get_running_loop().run_in_executor(procs, _appraise_here)
        rows.append(await _burst("processes", procs))
    return rows


def main() -> None:
    rows = asyncio.run(_main())
    print(f"{'mode':<10} {'wall s':>7} {'/s':>6} {'lag max ms':>11} {'lag p99 ms':>11}")
    for r in rows:
        print(
            f"{r['mode']:<10} {r['wall_s']:>7.2f} {r['appraisals_per_s']:>6.1f} "
            f"{r['loop_lag_max_ms']:>11.1f} {r['loop_lag_p99_ms']:>11.1f}"
        )
    OUT.write_text(
        json.dumps(
            {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "load_average_at_start": os.getloadavg(),
                "note": "a burst of whole-node appraisals (1 TDX quote + 8 GPUs with RIMs); "
                "loop lag = how late a 10 ms asyncio ticker fired while the burst ran. The machine "
                "is shared with other agents: compare rows of one run, not absolute figures.",
                "results": rows,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
