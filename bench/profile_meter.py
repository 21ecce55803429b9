"""Where the meter's CPU goes, per call and per token: py-spy samples of the attested meter under
the same load as bench_grpc.py / bench_tokens.py / bench_unary.py (real credentials, durable
journal, TLS with the simulated TEE's key).

For each workload (concurrency 8) the meter's CPU is read from /proc while py-spy (`pip install
py-spy`, not a project dependency: `--py-spy PATH`) samples it at `--rate` Hz with native frames,
keeping the samples in which a meter thread holds the GIL. Each sample is charged to the innermost
frame that belongs to a known layer (kernel I/O, thread hand-offs, the journal, receipts, the
meter's own code, TLS, JSON, protobuf, grpc.aio, aiohttp, the event loop); the layer's share
times the meter's CPU per call or token gives microseconds. py-spy pauses the meter for each
sample, so throughput here is lower than in the benchmarks; the shares are what this is for.
Writes bench/results/profile.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import timeit
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from bench_grpc import CREDENTIAL, attested_channel
from bench_meter import cpu_seconds
from bench_tokens import MESSAGES, PROMPT, TOKENS, Stream, grpc_stream, load, sse
from bench_unary import grpc_call, http_call
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from cocoon import keys
from cocoon.agent.simulated import SimulatedTee
from cocoon.attestation.policy import Policy
from cocoon.client import Verifier
from cocoon.devstack import triton
from cocoon.devstack.process import probe_context
from cocoon.meter import receipts
from cocoon.meter.pricing import Price
from cocoon.meter.process import MeterProcess, start_meter, write_credits
from cocoon.meter.usage import UsageCounter

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "profile.json"
# Each sample goes to the innermost frame that matches a layer (first match in this order).
_SYSCALLS = ("sendmsg ", "write ", "writev ", "read ", "recv ", "recvmsg ", "fdatasync ",
             "fsync ", "pwrite", "epoll_", "send ")
LAYERS: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("kernel I/O (socket and disk syscalls)",
     lambda f: "libc.so" in f and f.startswith(_SYSCALLS)),
    ("thread hand-offs (sem_post, futex, Condition)",
     lambda f: f.startswith(("sem_", "pthread_cond", "futex", "syscall ")) or "threading.py" in f),
    ("Python's cyclic garbage collector", lambda f: f.startswith("gc_")),
    ("interpreter (refcounts, allocator)",
     lambda f: f.startswith(("malloc ", "free ", "Py_", "_Py")) or "object.h" in f),
    ("journal (sqlite)", lambda f: "cocoon/meter/journal" in f or "sqlite" in f),
    ("receipts and reports (Ed25519, pydantic)",
     lambda f: any(p in f for p in ("cocoon/meter/receipts", "cocoon/keys", "cryptography",
                                    "pydantic", "base64"))),
    # cli.py is the frame that runs the event loop: below it is everything, not the meter's own.
    ("meter accounting and routing (cocoon.meter)",
     lambda f: "cocoon/" in f and "/cli.py" not in f),
    ("TLS (ssl, OpenSSL)", lambda f: any(p in f for p in ("ssl.py", "sslproto", "libssl",
                                                          "libcrypto", "_ssl"))),
    ("JSON", lambda f: "json/" in f or "_json" in f),
    ("protobuf", lambda f: "protobuf" in f),
    ("grpc.aio (Python and Cython/C core)", lambda f: "grpc/" in f),
    ("aiohttp, multidict, yarl, llhttp",
     lambda f: any(p in f for p in ("aiohttp/", "multidict", "yarl/", "llhttp"))),
    ("event loop (asyncio, uvloop)", lambda f: any(p in f for p in ("asyncio", "uvloop"))),
)


def layer(stack: str) -> str:
    for frame in reversed(stack.split(";")):
        for name, matches in LAYERS:
            if matches(frame):
                return name
    return "other"


def _short(frame: str) -> str:
    return frame.split(" (", 1)[0] + " (" + frame.rsplit("/", 1)[-1]


def collapse(path: Path) -> tuple[Counter[str], Counter[str], Counter[str], int]:
    """py-spy's raw output: samples per layer, per leaf function, per innermost meter line
    (everything below it included), and the total."""
    layers: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    meter_lines: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        layers[layer(stack)] += n
        frames = stack.split(";")
        leaves[_short(frames[-1])] += n
        ours = [f for f in frames if "cocoon/" in f and "/cli.py" not in f]
        meter_lines[_short(ours[-1]) if ours else "(no meter frame)"] += n
    return layers, leaves, meter_lines, total


def _cpu_per_unit(result: dict[str, float], cpu: float) -> tuple[str, float]:
    unit = "tokens" if result["tokens"] != result["calls"] else "calls"
    return unit, 1e6 * cpu / max(result[unit], 1)


async def profile(name: str, call: Stream, concurrency: int, seconds: float,
                  meter: MeterProcess, py_spy: Path, rate: int, work: Path) -> dict[str, Any]:
    """An unprofiled run for the CPU per unit (py-spy's pauses inflate it), then a profiled one
    for the shares."""
    await load(call, concurrency, 1.0)
    cpu0 = cpu_seconds(meter.process.pid)
    plain = await load(call, concurrency, seconds)
    unit, per_unit = _cpu_per_unit(plain, cpu_seconds(meter.process.pid) - cpu0)
    out = work / f"{name}.txt"
    spy = await asyncio.create_subprocess_exec(
        str(py_spy), "record", "--pid", str(meter.process.pid), "--rate", str(rate),
        "--format", "raw", "--full-filenames", "-o", str(out),
        "--duration", str(int(seconds)), "--gil", "--native",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    cpu0 = cpu_seconds(meter.process.pid)
    profiled = await load(call, concurrency, seconds)
    _, profiled_per_unit = _cpu_per_unit(profiled, cpu_seconds(meter.process.pid) - cpu0)
    said, _ = await spy.communicate()
    counted = re.search(rb"Samples: (\d+) Errors: (\d+)", said)
    layers, leaves, meter_lines, total = collapse(out)

    def share(counter: Counter[str], n: int) -> dict[str, float]:
        return {k: round(100 * v / total, 1) for k, v in counter.most_common(n)} if total else {}

    return {
        "case": f"{name} c{concurrency}", "unit": unit.rstrip("s"), "load": plain,
        "meterCpuUsPerUnit": round(per_unit, 1),
        "meterCpuUsPerUnitWhileProfiled": round(profiled_per_unit, 1),
        "gilHeldSamples": total,
        "pySpy": counted.group(0).decode() if counted else said.decode(errors="replace")[-200:],
        "loadAverage1m": round(os.getloadavg()[0], 2),
        "usPerUnitByLayer": {k: round(per_unit * v / total, 1)
                             for k, v in layers.most_common()} if total else {},
        "percentByLeafFunction": share(leaves, 12),
        "percentByInnermostMeterLine": share(meter_lines, 12),
    }


def operations_us(number: int = 3000) -> dict[str, float]:
    """Per-call and per-token operations of today's meter, alone (best of 5): a floor under the
    figures above, on the same loaded cores."""
    key = keys.generate()
    public = keys.public_bytes(key).hex()

    def issue() -> receipts.SignedReceipt:
        return receipts.issue(
            key, public, request_id="a" * 32, pool="ns/pool", channel="ns/channel",
            model="add", endpoint="infer", outcome="ok", request_sha256="0" * 64,
            response_sha256="1" * 64, units={"requests": 1}, price={"perRequest": "1000"},
            cost_nanoton=1000, cumulative_nanoton=5000)

    counter, signed = UsageCounter(streaming=True), issue()
    operations: dict[str, Callable[[], object]] = {
        "receiptIssue (per call: Ed25519 signature over canonical JSON)": issue,
        "ed25519SignAlone": lambda: key.sign(b"r" * 300),
        "receiptSignerPublicHex (per call: public key re-encoded)":
            lambda: keys.public_bytes(key).hex(),
        "usageCounterCopy (per token: dataclasses.replace for the credit trial)": counter.copy,
        "receiptSseEvent (per stream)": lambda: receipts.sse_event(signed),
    }
    return {name: round(1e6 * min(timeit.repeat(fn, number=number, repeat=5)) / number, 1)
            for name, fn in operations.items()}


async def measure(server: triton.TritonServer, meter: MeterProcess, verifier: Verifier,
                  args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    auth = {"Authorization": f"Bearer {CREDENTIAL}"}
    metadata = (("authorization", f"Bearer {CREDENTIAL}"),)
    generate = {"text_input": PROMPT, "max_tokens": TOKENS}
    chat = {"model": "llm", "messages": MESSAGES, "max_tokens": TOKENS, "stream": True,
            "stream_options": {"include_usage": True}}
    results = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=probe_context())) as s, \
            attested_channel(meter, verifier) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        base = meter.http_url
        cases: dict[str, Callable[[], Awaitable[tuple[float, int]]]] = {
            "grpc unary add": lambda: grpc_call(stub, metadata),
            "https unary add": lambda: http_call(s, base + "/v2/models/add/infer", auth),
            "grpc stream llm": lambda: grpc_stream(stub, metadata),
            "sse generate_stream llm": lambda: sse(
                s, base + "/v2/models/llm/generate_stream", generate, auth, b'"text_output":"'),
            "openai chat stream llm": lambda: sse(
                s, base + "/v1/chat/completions", chat, auth, b'"content":"'),
        }
        for name, call in cases.items():
            results.append(await profile(name, call, args.concurrency, args.seconds, meter,
                                         args.py_spy, args.rate, work))
            r = results[-1]
            print(f"{r['case']:<28} {r['meterCpuUsPerUnit']:>7} us/{r['unit']}  "
                  f"{r['usPerUnitByLayer']}", flush=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--py-spy", type=Path, required=True, help="path of the py-spy binary")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rate", type=int, default=100, help="samples per second")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    price = Price(per_request="1000", per_input_token="10", per_output_token="100")
    with tempfile.TemporaryDirectory() as tmp, triton.start() as server:
        work = Path(tmp)
        write_credits(work / "credits.json", {CREDENTIAL: ("bench/channel", 10**18)})
        sim = SimulatedTee.generate(now=datetime.now(UTC))
        sim.save(work / "sim")
        tokenizer = triton.DEMO_MODELS / "llm" / "tokenizer.json"
        meter = start_meter(server, work, price=price, models=("add", "llm"),
                            simulated_tee=work / "sim", log_level="warning",
                            extra_args=(f"--tokenizer={tokenizer}",))
        try:
            results = asyncio.run(
                measure(server, meter, Verifier(Policy.from_spec(sim.policy_spec())), args, work))
        finally:
            meter.stop()
    document = {
        "command": "python bench/profile_meter.py " + " ".join(sys.argv[1:]),
        "meter": {"journal": "full (fsync before answering)", "credential": "real",
                  "transport": "TLS 1.3, attested key (simulated TEE)"},
        "method": "py-spy record --gil --native (blocking) of the meter: samples in which a "
                  "meter thread held the GIL, native frames included, each charged to the "
                  "innermost frame of a known layer; layer share x the meter's CPU per unit "
                  "(/proc). CPU spent without the GIL (grpc's C-core threads, fsync waits are "
                  "not CPU) is spread over the layers in proportion.",
        "results": results,
        "operationsUs": operations_us(),
        "loadAverage1mAtEnd": round(os.getloadavg()[0], 2),
    }
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
