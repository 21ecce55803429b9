"""Unary calls through the meter vs direct, real credentials on gRPC too (no anonymous channel).

Two meters run side by side: one on plain HTTP/h2c (`--plaintext`, the old baseline) and the
production one on TLS 1.3 with its attested in-memory key (simulated TEE), so the cost of TLS is
measured in the same run.

perf_analyzer 2.51 cannot send gRPC metadata, so `bench_meter.py` measures gRPC through the
meter's benchmark-only `--anonymous-channel`. This load generator (aiohttp, grpc.aio) sends the
credential on every call, HTTP and gRPC, with the default durable journal, on the toy `add`
model at concurrency 1 and 8, direct and metered in the same run. Reports calls/s, p50 latency
(added), and the meter's CPU per call. Writes bench/results/unary.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import ssl
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import numpy as np
from bench_meter import cpu_seconds
from bench_tokens import Stream, load
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from cocoon.agent.simulated import SimulatedTee
from cocoon.devstack import triton
from cocoon.devstack.process import probe_context
from cocoon.meter.identity import TLS_NAME
from cocoon.meter.journal import read_charges
from cocoon.meter.pricing import Price
from cocoon.meter.process import MeterProcess, start_meter, write_credits

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "unary.json"
CREDENTIAL = "bench-credential"
ADD_BODY = {"inputs": [
    {"name": n, "shape": [16], "datatype": "FP32", "data": [1.0] * 16}
    for n in ("INPUT0", "INPUT1")
]}
TARGETS = {"meterCpuUsPerCall": 150.0, "addedP50Ms": 0.3}


def add_request() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="add")
    for name in ("INPUT0", "INPUT1"):
        request.inputs.add(name=name, datatype="FP32", shape=[16])
        request.raw_input_contents.append(np.ones(16, np.float32).tobytes())
    return request


async def http_call(session: aiohttp.ClientSession, url: str,
                    headers: dict[str, str]) -> tuple[float, int]:
    start = time.perf_counter()
    async with session.post(url, json=ADD_BODY, headers=headers) as response:
        await response.read()
        assert response.status == 200
    return time.perf_counter() - start, 1


async def grpc_call(stub: Any, metadata: tuple[tuple[str, str], ...]) -> tuple[float, int]:
    start = time.perf_counter()
    await stub.ModelInfer(add_request(), metadata=metadata)
    return time.perf_counter() - start, 1


def _tls_channel(meter: MeterProcess) -> grpc.aio.Channel:
    """gRPC to the attested meter, its certificate pinned (fetched once, as a client that
    verified it would)."""
    pem = ssl.get_server_certificate(("127.0.0.1", meter.grpc_port)).encode()
    return grpc.aio.secure_channel(
        meter.grpc_target, grpc.ssl_channel_credentials(root_certificates=pem),
        options=(("grpc.ssl_target_name_override", TLS_NAME),),
    )


async def measure(server: triton.TritonServer, meter: MeterProcess, tls: MeterProcess,
                  seconds: float) -> list[Any]:
    auth = {"Authorization": f"Bearer {CREDENTIAL}"}
    metadata = (("authorization", f"Bearer {CREDENTIAL}"),)
    path = "/v2/models/add/infer"
    results = []
    async with aiohttp.ClientSession() as session, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=probe_context())) as https, \
            grpc.aio.insecure_channel(server.grpc_target) as direct_channel, \
            grpc.aio.insecure_channel(meter.grpc_target) as meter_channel, \
            _tls_channel(tls) as tls_channel:
        direct_stub = pb_grpc.GRPCInferenceServiceStub(direct_channel)
        meter_stub = pb_grpc.GRPCInferenceServiceStub(meter_channel)
        tls_stub = pb_grpc.GRPCInferenceServiceStub(tls_channel)
        cases: dict[str, tuple[Stream, Stream, MeterProcess]] = {
            "http": (lambda: http_call(session, server.http_url + path, {}),
                     lambda: http_call(session, meter.http_url + path, auth), meter),
            "grpc": (lambda: grpc_call(direct_stub, ()),
                     lambda: grpc_call(meter_stub, metadata), meter),
            "https": (lambda: http_call(session, server.http_url + path, {}),
                      lambda: http_call(https, tls.http_url + path, auth), tls),
            "grpc+tls": (lambda: grpc_call(direct_stub, ()),
                         lambda: grpc_call(tls_stub, metadata), tls),
        }
        for name, (direct, metered, process) in cases.items():
            for concurrency in (1, 8):
                await load(metered, concurrency, 1.0)
                d = await load(direct, concurrency, seconds)
                cpu0 = cpu_seconds(process.process.pid)
                m = await load(metered, concurrency, seconds)
                cpu = cpu_seconds(process.process.pid) - cpu0
                results.append({
                    "case": f"{name} add c{concurrency}",
                    "directCallsPerSecond": d["tokensPerSecond"],
                    "meteredCallsPerSecond": m["tokensPerSecond"],
                    "throughputRatio": round(m["tokensPerSecond"] / d["tokensPerSecond"], 3),
                    "directP50Ms": d["ttftP50Ms"], "meteredP50Ms": m["ttftP50Ms"],
                    "addedP50Ms": round(m["ttftP50Ms"] - d["ttftP50Ms"], 3),
                    "meterCpuUsPerCall": round(1e6 * cpu / max(m["calls"], 1), 1),
                })
                r = results[-1]
                print(f"{r['case']:<12} direct {r['directCallsPerSecond']:>8}/s  metered "
                      f"{r['meteredCallsPerSecond']:>8}/s  ratio {r['throughputRatio']:.3f}  "
                      f"p50 +{r['addedP50Ms']:.3f} ms  meter {r['meterCpuUsPerCall']} us/call",
                      flush=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, triton.start() as server:
        work = Path(tmp)
        write_credits(work / "credits.json", {CREDENTIAL: ("bench/channel", 10**18)})
        write_credits(work / "tls" / "credits.json", {CREDENTIAL: ("bench/channel", 10**18)})
        SimulatedTee.generate(now=datetime.now(UTC)).save(work / "sim")
        meter = start_meter(server, work, price=Price(per_request="1000"), models=("add",))
        tls = start_meter(server, work / "tls", price=Price(per_request="1000"), models=("add",),
                          simulated_tee=work / "sim")
        try:
            results = asyncio.run(measure(server, meter, tls, args.seconds))
        finally:
            meter.stop()
            tls.stop()
        journaled = sum(1 for m in (meter, tls) for _ in read_charges(m.journal))
    document = {
        "command": "python bench/bench_unary.py", "machine": {
            "cpus": 2, "platform": platform.platform(), "python": sys.version.split()[0],
            "note": "2 cores shared by Triton, the meter and this Python load generator"},
        "meter": {"journal": "full (fsync before answering)", "credential": "real, every call",
                  "transport": "http/grpc: --plaintext; https/grpc+tls: TLS 1.3 with the "
                               "meter's attested in-memory key (simulated TEE)",
                  "journaledCalls": journaled},
        "targets": TARGETS, "results": results,
    }
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.output} ({journaled} calls journaled)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
