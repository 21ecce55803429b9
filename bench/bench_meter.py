"""Meter overhead: Triton's perf_analyzer direct to Triton and through the meter, in one run.

Cases: HTTP and gRPC on the toy `add` model at concurrency 1 and 8, and gRPC streaming on the
decoupled `tokens` model (8 tokens, 5 ms apart). Each case runs direct, then through the meter
(journal on disk, fsync per group commit: the production setting), then through a meter whose
journal is on tmpfs, which isolates the proxy's own cost from the disk's fsync latency.
Writes bench/results/meter.json and prints a table.

Needs: apt-get install -y libb64-0d (for tritonclient 2.51's perf_analyzer).
Note: this machine has 2 cores, shared by Triton, the meter and perf_analyzer.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cocoon.devstack import triton
from cocoon.meter.pricing import Price
from cocoon.meter.process import MeterProcess, start_meter, write_credits

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "meter.json"
CREDENTIAL = "bench-credential"
VENV_BIN = Path(sys.executable).parent
CUDA_RT = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" \
    / "site-packages" / "nvidia" / "cuda_runtime" / "lib"


@dataclass(frozen=True)
class Case:
    name: str
    protocol: str
    model: str
    concurrency: int
    streaming: bool = False


CASES = (
    Case("http add c1", "http", "add", 1),
    Case("http add c8", "http", "add", 8),
)
# perf_analyzer 2.51 sends -H headers over HTTP only, never as gRPC metadata, so it cannot
# authenticate to the meter over gRPC (and its streaming mode is gRPC-only).
NOT_MEASURED = {
    "grpc add c1/c8, grpc stream tokens c1/c8": "perf_analyzer 2.51 does not send -H headers as "
    "gRPC metadata, so the meter rejects it as unauthenticated; needs a gRPC load generator",
}


@dataclass
class Measurement:
    throughput: float
    p50_us: float
    p99_us: float
    cpu_seconds: float | None = None
    wall_seconds: float | None = None


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def perf_analyzer(case: Case, url: str, workdir: Path, interval_ms: int) -> Measurement:
    report = workdir / "pa.csv"
    args = [
        str(VENV_BIN / "perf_analyzer"), "-m", case.model, "-u", url, "-i", case.protocol,
        "--concurrency-range", f"{case.concurrency}:{case.concurrency}",
        "-p", str(interval_ms), "--max-trials", "3", "--stability-percentage", "100",
        "-H", f"authorization: Bearer {CREDENTIAL}", "-f", str(report),
    ]
    if case.streaming:
        data = workdir / "tokens.json"
        data.write_text(json.dumps({"data": [{
            "text_input": ["the quick brown fox"], "max_tokens": [8], "delay_ms": [5],
        }]}))
        args += ["--streaming", "--input-data", str(data)]
    env = {**os.environ, "LD_LIBRARY_PATH": str(CUDA_RT)}
    run = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300,
                         check=False)
    if run.returncode != 0:
        raise RuntimeError(f"perf_analyzer failed ({case.name} @ {url}):\n{run.stdout}\n"
                           f"{run.stderr}")
    with report.open() as f:
        row = next(csv.DictReader(f))
    return Measurement(
        throughput=float(row["Inferences/Second"]),
        p50_us=float(row["p50 latency"]),
        p99_us=float(row["p99 latency"]),
    )


def measure_meter(
    case: Case, meter: MeterProcess, workdir: Path, interval_ms: int
) -> Measurement:
    url = meter.http_url.removeprefix("http://") if case.protocol == "http" else meter.grpc_target
    before, start = cpu_seconds(meter.process.pid), time.monotonic()
    result = perf_analyzer(case, url, workdir, interval_ms)
    result.cpu_seconds = cpu_seconds(meter.process.pid) - before
    result.wall_seconds = time.monotonic() - start
    return result


def start_bench_meter(server: triton.TritonServer, workdir: Path) -> MeterProcess:
    write_credits(workdir / "credits.json", {CREDENTIAL: ("bench/channel", 10**30)})
    return start_meter(
        server, workdir, price=Price(per_request="1000", per_output_token="100"),
        extra_args=("--reserve-output-tokens=16", *(("--uvloop",) if _uvloop() else ())),
        log_level="warning",
    )


def _uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ModuleNotFoundError:
        return False
    return True


def summarize(case: Case, direct: Measurement, metered: Measurement) -> dict[str, object]:
    rate = metered.throughput
    cores = (metered.cpu_seconds or 0) / (metered.wall_seconds or 1)
    return {
        "throughputRatio": round(rate / direct.throughput, 3),
        "addedP50Ms": round((metered.p50_us - direct.p50_us) / 1000, 3),
        "addedP99Ms": round((metered.p99_us - direct.p99_us) / 1000, 3),
        "meterCoresAtThisLoad": round(cores, 3),
        "meterCoresPer1000ReqPerSec": round(cores / (rate / 1000), 3) if rate else None,
        "addedP50Percent": round(100 * (metered.p50_us - direct.p50_us) / direct.p50_us, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval-ms", type=int, default=3000)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-meter-") as tmp, \
            tempfile.TemporaryDirectory(prefix="bench-meter-", dir="/dev/shm") as shm, \
            triton.start() as server:
        work = Path(tmp)
        disk_meter = start_bench_meter(server, work / "disk")
        shm_meter = start_bench_meter(server, Path(shm))
        try:
            for case in CASES:
                direct_url = (server.http_url.removeprefix("http://")
                              if case.protocol == "http" else server.grpc_target)
                direct = perf_analyzer(case, direct_url, work, args.interval_ms)
                disk = measure_meter(case, disk_meter, work, args.interval_ms)
                tmpfs = measure_meter(case, shm_meter, work, args.interval_ms)
                results.append({
                    "case": asdict(case), "direct": asdict(direct),
                    "meter": asdict(disk), "meterTmpfsJournal": asdict(tmpfs),
                    "overhead": summarize(case, direct, disk),
                    "overheadTmpfsJournal": summarize(case, direct, tmpfs),
                })
                print_row(case, direct, disk, tmpfs)
        finally:
            disk_meter.stop()
            shm_meter.stop()
    document = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "note": "Triton, meter and perf_analyzer share these cores"},
        "targets": {"throughputRatio": 0.9, "addedP50MsToyModel": 0.3,
                    "addedP50PercentStreaming": 1.0},
        "results": results,
        "notMeasured": NOT_MEASURED,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 0


def print_row(case: Case, direct: Measurement, disk: Measurement, tmpfs: Measurement) -> None:
    if case is CASES[0]:
        print(f"{'case':24} {'direct/s':>9} {'meter/s':>9} {'ratio':>6} {'+p50ms':>7} "
              f"{'+p99ms':>7} {'cores/1k':>8} | {'tmpfs/s':>8} {'ratio':>6} {'+p50ms':>7}")
    d, t = summarize(case, direct, disk), summarize(case, direct, tmpfs)
    print(f"{case.name:24} {direct.throughput:9.1f} {disk.throughput:9.1f} "
          f"{d['throughputRatio']:6} {d['addedP50Ms']:7} {d['addedP99Ms']:7} "
          f"{d['meterCoresPer1000ReqPerSec']!s:>8} | {tmpfs.throughput:8.1f} "
          f"{t['throughputRatio']:6} {t['addedP50Ms']:7}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
