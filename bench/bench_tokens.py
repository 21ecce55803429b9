"""Token streams through the meter vs direct to Triton, in one run, with our own load generator.

Every metered call carries a real credential (HTTP `Authorization`, gRPC `authorization`
metadata: no anonymous channel) and is journaled with the default durable journal (fsync before
the last byte). Cases, on the demo `llm` model (real tokenizer, `TOKENS` tokens per call at the
model's default pace), at concurrency 1 and 8:
- `sse`: KServe generate_stream over HTTP;
- `grpc`: ModelStreamInfer with one request per stream;
- `openai`: POST /v1/chat/completions with stream: true through the meter, against
  generate_stream direct with the same rendered prompt (time to first token is the figure).
Reports token throughput (direct, metered, ratio), time-to-first-token p50 (added), and the meter's
CPU per streamed token from /proc. Writes bench/results/tokens.json and prints a table.
`journalPerChunk` compares, in one run and in process, a stream's per-chunk work without and with
the durable progress write each chunk now makes before it is forwarded (`Call.deliver`: one
upsert, a commit shared by the chunks of that loop iteration, fdatasyncs grouped);
`--journal-only` measures just that and writes bench/results/tokens_journal.json.
The load generator is Python on the same 2 shared cores, so it competes with what it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import numpy as np
from bench_meter import cpu_seconds
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from cocoon.devstack import triton
from cocoon.meter.core import Meter, MeterConfig
from cocoon.meter.credits import ChannelCredit, StaticCreditSource, credential_hash
from cocoon.meter.journal import Journal, read_charges
from cocoon.meter.metrics import MeterMetrics
from cocoon.meter.openai_wire import chat_prompt, parse, text_chunk_template
from cocoon.meter.pricing import Price
from cocoon.meter.process import MeterProcess, start_meter, write_credits
from cocoon.meter.usage import SseMeter, UsageCounter, count_event

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "tokens.json"
CREDENTIAL = "bench-credential"
TOKENS = 32
MESSAGES = [{"role": "user", "content": "How is a token stream metered?"}]
PROMPT = chat_prompt(MESSAGES)
TARGETS = {"meterCpuUsPerToken": 40.0, "tokenThroughputRatio": 0.97, "addedTtftMs": 1.0}
Stream = Callable[[], Awaitable[tuple[float, int]]]


async def sse(session: aiohttp.ClientSession, url: str, body: dict[str, Any],
              headers: dict[str, str], marker: bytes) -> tuple[float, int]:
    """One SSE call: (seconds to the first event holding non-empty `marker`, such events)."""
    start, first, tokens = time.perf_counter(), 0.0, 0
    empty = marker + b'"'
    async with session.post(url, json=body, headers=headers) as response:
        assert response.status == 200, await response.text()
        async for line in response.content:
            if line.startswith(b"data: ") and marker in line and empty not in line:
                tokens += 1
                if tokens == 1:
                    first = time.perf_counter() - start
    return first, tokens


def grpc_request() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="llm")
    request.inputs.add(name="text_input", datatype="BYTES", shape=[1])
    encoded = PROMPT.encode()
    request.raw_input_contents.append(len(encoded).to_bytes(4, "little") + encoded)
    request.inputs.add(name="max_tokens", datatype="INT32", shape=[1])
    request.raw_input_contents.append(np.int32(TOKENS).tobytes())
    return request


async def grpc_stream(stub: Any, metadata: tuple[tuple[str, str], ...]) -> tuple[float, int]:
    start, first, tokens = time.perf_counter(), 0.0, 0

    async def requests() -> AsyncIterator[pb.ModelInferRequest]:
        yield grpc_request()

    async for response in stub.ModelStreamInfer(requests(), metadata=metadata):
        assert not response.error_message, response.error_message
        tokens += 1
        if tokens == 1:
            first = time.perf_counter() - start
    return first, tokens


async def load(stream: Stream, concurrency: int, seconds: float) -> dict[str, float]:
    ttfts: list[float] = []
    tokens = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal tokens
        while time.perf_counter() < deadline:
            first, count = await stream()
            ttfts.append(first)
            tokens += count

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    return {"tokensPerSecond": round(tokens / wall, 1), "tokens": tokens, "calls": len(ttfts),
            "ttftP50Ms": round(1000 * statistics.median(ttfts), 3), "wallSeconds": round(wall, 2)}


async def measure(server: triton.TritonServer, meter: MeterProcess, seconds: float) -> list[Any]:
    auth = {"Authorization": f"Bearer {CREDENTIAL}"}
    generate = {"text_input": PROMPT, "max_tokens": TOKENS}
    chat = {"model": "llm", "messages": MESSAGES, "max_tokens": TOKENS, "stream": True,
            "stream_options": {"include_usage": True}}
    results = []
    async with aiohttp.ClientSession() as session, \
            grpc.aio.insecure_channel(server.grpc_target) as direct_channel, \
            grpc.aio.insecure_channel(meter.grpc_target) as meter_channel:
        direct_stub = pb_grpc.GRPCInferenceServiceStub(direct_channel)
        meter_stub = pb_grpc.GRPCInferenceServiceStub(meter_channel)
        metadata = (("authorization", f"Bearer {CREDENTIAL}"),)
        path = "/v2/models/llm/generate_stream"
        cases: dict[str, tuple[Stream, Stream]] = {
            "sse": (
                lambda: sse(session, server.http_url + path, generate, {}, b'"text_output":"'),
                lambda: sse(session, meter.http_url + path, generate, auth, b'"text_output":"'),
            ),
            "grpc": (
                lambda: grpc_stream(direct_stub, ()),
                lambda: grpc_stream(meter_stub, metadata),
            ),
            "openai": (
                lambda: sse(session, server.http_url + path, generate, {}, b'"text_output":"'),
                lambda: sse(session, meter.http_url + "/v1/chat/completions", chat, auth,
                            b'"content":"'),
            ),
        }
        for name, (direct, metered) in cases.items():
            for concurrency in (1, 8):
                await load(metered, concurrency, 1.0)  # warm connections and the model
                d = await load(direct, concurrency, seconds)
                cpu0 = cpu_seconds(meter.process.pid)
                m = await load(metered, concurrency, seconds)
                cpu = cpu_seconds(meter.process.pid) - cpu0
                results.append({
                    "case": f"{name} c{concurrency}", "direct": d, "metered": m,
                    "tokenThroughputRatio": round(m["tokensPerSecond"] / d["tokensPerSecond"], 3),
                    "addedTtftMs": round(m["ttftP50Ms"] - d["ttftP50Ms"], 3),
                    "meterCpuUsPerToken": round(1e6 * cpu / max(m["tokens"], 1), 1),
                    "meterCores": round(cpu / m["wallSeconds"], 3),
                })
                print(_row(results[-1]), flush=True)
    return results


def python_per_event_us(events: int = 20000) -> dict[str, float]:
    """The meter's own Python work per streamed token, without I/O: the floor of its CPU cost."""
    event = b'data: {"model_name":"llm","model_version":"1","text_output":" meter"}\n\n'
    counter, sse_meter = UsageCounter(streaming=True), SseMeter()
    start = time.perf_counter()
    for _ in range(events):
        for complete in sse_meter.split(event):
            count_event(counter, complete)
    kserve = time.perf_counter() - start
    parsed = parse({"model": "llm", "messages": MESSAGES, "stream": True}, chat=True,
                   default_max_tokens=TOKENS)
    prefix, suffix = text_chunk_template(parsed, "r", 0)
    start = time.perf_counter()
    for _ in range(events):
        text = json.loads(event[6:])["text_output"]
        prefix + json.dumps(text).encode() + suffix
    translate = time.perf_counter() - start
    return {"kserveCountUs": round(1e6 * kserve / events, 2),
            "openaiTranslateUs": round(1e6 * translate / events, 2)}


async def _chunks(work: Path, streams: int, chunks: int, durable: bool) -> dict[str, float]:
    """`streams` concurrent streams of `chunks` one-token chunks through the meter's call life
    cycle on a real journal (`full` mode), each chunk counted as the SSE pump counts it; with
    `durable`, journaled before it would be sent, as the pump now does."""
    event = b'data: {"model_name":"llm","model_version":"1","text_output":" meter"}\n\n'
    journal = Journal(work / f"journal-{streams}-{durable}.db")
    credits = StaticCreditSource({credential_hash(CREDENTIAL): ChannelCredit("b/c", 10**18)})
    price = Price(per_request="1000", per_input_token="10", per_output_token="100")
    meter = Meter(MeterConfig(pool="b/p", price=price), credits, journal, MeterMetrics(["llm"]))
    calls = [meter.begin(f"Bearer {CREDENTIAL}", "llm", "http", "generate_stream",
                         streaming=True) for _ in range(streams)]

    async def stream(call: Any) -> None:
        sse_meter = SseMeter()
        for _ in range(chunks):
            trial = call.counter.copy()
            for complete in sse_meter.split(event):
                count_event(trial, complete)
            assert call.affordable(trial)
            if durable:
                await call.deliver(trial)
            else:
                call.counter = trial
                await asyncio.sleep(0)  # the pump's own turn of the loop per chunk
        await call.settle("ok")
        call.abandon()

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(stream(call) for call in calls))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    total = streams * chunks
    result = {"cpuUsPerChunk": round(1e6 * cpu / total, 2),
              "wallUsPerChunk": round(1e6 * wall / total, 2),
              "commits": journal.batches, "fdatasyncs": journal.flushes}
    journal.close()
    return result


def journal_per_chunk(chunks: int = 2000) -> list[dict[str, Any]]:
    """Per-chunk cost before (count only) and after (count + durable progress row), one run."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for streams in (1, 8):
            before = asyncio.run(_chunks(Path(tmp), streams, chunks, durable=False))
            after = asyncio.run(_chunks(Path(tmp), streams, chunks, durable=True))
            rows.append({
                "streams": streams, "chunksPerStream": chunks, "before": before, "after": after,
                "addedCpuUsPerChunk": round(after["cpuUsPerChunk"] - before["cpuUsPerChunk"], 2),
                "fdatasyncsPer1000Chunks": round(1000 * after["fdatasyncs"] / (streams * chunks),
                                                 2),
            })
            print(f"journal per chunk, {streams} stream(s): {before['cpuUsPerChunk']} -> "
                  f"{after['cpuUsPerChunk']} us CPU, {rows[-1]['fdatasyncsPer1000Chunks']} "
                  "fdatasyncs per 1000 chunks", flush=True)
    return rows


def _row(r: dict[str, Any]) -> str:
    return (f"{r['case']:<10} direct {r['direct']['tokensPerSecond']:>8} tok/s  metered "
            f"{r['metered']['tokensPerSecond']:>8} tok/s  ratio {r['tokenThroughputRatio']:.3f}  "
            f"TTFT +{r['addedTtftMs']:.3f} ms  meter {r['meterCpuUsPerToken']} us/token")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--journal-only", action="store_true",
                        help="only the per-chunk journal comparison (no Triton)")
    args = parser.parse_args()
    machine = {"cpus": 2, "platform": platform.platform(), "python": sys.version.split()[0]}
    if args.journal_only:
        output = args.output if args.output != RESULTS else RESULTS.with_name(
            "tokens_journal.json")
        output.write_text(json.dumps({
            "command": "python bench/bench_tokens.py --journal-only", "machine": machine,
            "journal": "full (the default)", "journalPerChunk": journal_per_chunk(),
        }, indent=2) + "\n")
        print(f"wrote {output}")
        return 0
    price = Price(per_request="1000", per_input_token="10", per_output_token="100")
    with tempfile.TemporaryDirectory() as tmp, triton.start() as server:
        work = Path(tmp)
        write_credits(work / "credits.json", {CREDENTIAL: ("bench/channel", 10**18)})
        tokenizer = triton.DEMO_MODELS / "llm" / "tokenizer.json"
        meter = start_meter(server, work, price=price, models=("llm",),
                            extra_args=(f"--tokenizer={tokenizer}",))
        try:
            results = asyncio.run(measure(server, meter, args.seconds))
        finally:
            meter.stop()
        journaled = sum(1 for _ in read_charges(meter.journal))
    document = {
        "command": "python bench/bench_tokens.py", "machine": {
            "cpus": 2, "platform": platform.platform(), "python": sys.version.split()[0],
            "note": "2 cores shared by Triton, the meter and this Python load generator"},
        "model": {"name": "llm", "tokensPerCall": TOKENS, "paceMs": 2},
        "meter": {"journal": "full (fsync before answering)", "credential": "real, every call",
                  "journaledCalls": journaled},
        "targets": TARGETS, "results": results, "pythonPerEvent": python_per_event_us(),
        "journalPerChunk": journal_per_chunk(),
    }
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.output} ({journaled} calls journaled)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
