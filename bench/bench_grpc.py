"""gRPC through the attested meter vs direct to Triton, real credentials, one run.

perf_analyzer 2.51 cannot send gRPC metadata, which once forced a benchmark-only anonymous
channel into the meter. This load generator (grpc.aio) sends `authorization: Bearer <credential>`
as metadata on every metered call, so the full path runs: credential lookup, credit gate,
pricing, and the default durable journal (fsync before the answer's last message). The meter
serves TLS 1.3 with its attested in-memory key (simulated TEE, as the tests use); the client
appraises the evidence in the meter's certificate against the simulated TEE's policy with
`cocoon.client.Verifier` and pins that certificate before the first call, as a caller would.

Cases, each at every `--concurrency` (default 1 and 8), direct then metered, back to back:
- `unary`: ModelInfer on the toy `add` model (FP32[16]);
- `stream`: ModelStreamInfer, one request per stream, on the `llm` model (`TOKENS` tokens per
  call at the model's pace).
Reports calls/s or tokens/s (direct, metered, ratio), p50 latency or time to first token
(added), the meter's CPU per call or per token from /proc, and the load average around each
measurement (the 2 cores are shared). Writes bench/results/grpc.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import ssl
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from bench_meter import cpu_seconds
from bench_tokens import TOKENS, Stream, grpc_stream, load
from bench_unary import grpc_call
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from cocoon.agent.simulated import SimulatedTee
from cocoon.attestation.policy import Policy
from cocoon.client import Verifier
from cocoon.devstack import triton
from cocoon.meter.identity import TLS_NAME
from cocoon.meter.journal import read_charges
from cocoon.meter.pricing import Price
from cocoon.meter.process import MeterProcess, start_meter, write_credits

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "grpc.json"
CREDENTIAL = "bench-credential"
TARGETS = {"meterCpuUsPerCall": 150.0, "addedP50Ms": 0.3, "meterCpuUsPerToken": 40.0,
           "tokenThroughputRatio": 0.97}


def attested_channel(meter: MeterProcess, verifier: Verifier) -> grpc.aio.Channel:
    """A gRPC channel pinned to the meter's certificate, once its attested evidence verified."""
    pem = ssl.get_server_certificate(("127.0.0.1", meter.grpc_port))
    pin = verifier.from_certificate(meter.grpc_target, ssl.PEM_cert_to_DER_cert(pem))
    if pin is None:
        raise SystemExit("the meter's certificate evidence did not verify: not benchmarking it")
    return grpc.aio.secure_channel(
        meter.grpc_target, grpc.ssl_channel_credentials(root_certificates=pem.encode()),
        options=(("grpc.ssl_target_name_override", TLS_NAME),),
    )


def _load_average() -> float:
    return round(os.getloadavg()[0], 2)


async def measure(server: triton.TritonServer, meter: MeterProcess, verifier: Verifier,
                  concurrencies: list[int], seconds: float) -> tuple[list[Any], int]:
    metadata = (("authorization", f"Bearer {CREDENTIAL}"),)
    results, metered_calls = [], 0
    async with grpc.aio.insecure_channel(server.grpc_target) as direct_channel, \
            attested_channel(meter, verifier) as meter_channel:
        direct = pb_grpc.GRPCInferenceServiceStub(direct_channel)
        metered = pb_grpc.GRPCInferenceServiceStub(meter_channel)
        cases: dict[str, tuple[Stream, Stream]] = {
            "unary": (lambda: grpc_call(direct, ()), lambda: grpc_call(metered, metadata)),
            "stream": (lambda: grpc_stream(direct, ()), lambda: grpc_stream(metered, metadata)),
        }
        for name, (direct_call, metered_call) in cases.items():
            for concurrency in concurrencies:
                warm = await load(metered_call, concurrency, 1.0)
                load_before = _load_average()
                d = await load(direct_call, concurrency, seconds)
                cpu0 = cpu_seconds(meter.process.pid)
                m = await load(metered_call, concurrency, seconds)
                cpu = cpu_seconds(meter.process.pid) - cpu0
                metered_calls += int(warm["calls"] + m["calls"])
                results.append(_result(name, concurrency, d, m, cpu,
                                       [load_before, _load_average()]))
                print(_row(results[-1]), flush=True)
    return results, metered_calls


def _result(name: str, concurrency: int, d: dict[str, float], m: dict[str, float], cpu: float,
            load_average: list[float]) -> dict[str, Any]:
    result: dict[str, Any] = {"case": f"grpc+tls {name} c{concurrency}", "direct": d,
                              "metered": m, "loadAverage1m": load_average}
    ratio = round(m["tokensPerSecond"] / d["tokensPerSecond"], 3)
    added = round(m["ttftP50Ms"] - d["ttftP50Ms"], 3)
    if name == "unary":
        result.update(throughputRatio=ratio, addedP50Ms=added,
                      meterCpuUsPerCall=round(1e6 * cpu / max(m["calls"], 1), 1))
    else:
        result.update(tokenThroughputRatio=ratio, addedTtftMs=added,
                      meterCpuUsPerToken=round(1e6 * cpu / max(m["tokens"], 1), 1),
                      meterCpuUsPerCall=round(1e6 * cpu / max(m["calls"], 1), 1))
    result["meterCores"] = round(cpu / m["wallSeconds"], 3)
    return result


def _row(r: dict[str, Any]) -> str:
    unit = "calls" if "addedP50Ms" in r else "tok"
    added = r.get("addedP50Ms", r.get("addedTtftMs"))
    per = (f"{r['meterCpuUsPerCall']} us/call" if unit == "calls"
           else f"{r['meterCpuUsPerToken']} us/token")
    ratio = r.get("throughputRatio", r.get("tokenThroughputRatio"))
    return (f"{r['case']:<22} direct {r['direct']['tokensPerSecond']:>8} {unit}/s  metered "
            f"{r['metered']['tokensPerSecond']:>8} {unit}/s  ratio {ratio:.3f}  "
            f"{'p50' if unit == 'calls' else 'TTFT'} {added:+.3f} ms  meter {per}  "
            f"load {r['loadAverage1m']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    price = Price(per_request="1000", per_input_token="10", per_output_token="100")
    with tempfile.TemporaryDirectory() as tmp, triton.start() as server:
        work = Path(tmp)
        write_credits(work / "credits.json", {CREDENTIAL: ("bench/channel", 10**18)})
        sim = SimulatedTee.generate(now=datetime.now(UTC))
        sim.save(work / "sim")
        verifier = Verifier(Policy.from_spec(sim.policy_spec()))
        meter = start_meter(server, work, price=price, models=("add", "llm"),
                            simulated_tee=work / "sim", log_level="warning")
        try:
            results, metered_calls = asyncio.run(
                measure(server, meter, verifier, args.concurrency, args.seconds))
        finally:
            meter.stop()
        journaled = sum(1 for _ in read_charges(meter.journal))
    if journaled != metered_calls:
        raise SystemExit(f"{metered_calls} metered calls but {journaled} journaled")
    document = {
        "command": "python bench/bench_grpc.py " + " ".join(sys.argv[1:]), "machine": {
            "cpus": os.cpu_count(), "platform": platform.platform(),
            "python": sys.version.split()[0],
            "note": "2 cores shared by Triton, the meter, this Python load generator and "
                    "other users' work: see loadAverage1m per case"},
        "models": {"unary": "add (FP32[16])",
                   "stream": {"name": "llm", "tokensPerCall": TOKENS, "paceMs": 2}},
        "meter": {"journal": "full (fsync before answering)",
                  "credential": "real, gRPC metadata on every metered call",
                  "transport": "TLS 1.3 with the meter's attested in-memory key (simulated "
                               "TEE), certificate evidence verified and pinned by the client",
                  "meteredCalls": metered_calls, "journaledCalls": journaled},
        "targets": TARGETS, "results": results,
    }
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.output} ({journaled} of {metered_calls} metered calls journaled)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
