"""A real TLS server standing in for the meter: attestation route, KServe routes, receipts.

It uses the real MeterIdentity (in-memory keys, RA-TLS certificate, TLS 1.3) and the simulated
TEE, and records every request it receives (method, path, body, peer) so tests can prove what
reached it. Knobs turn it into the attacks: unlisted measurement, stale proof, altered receipt.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from aiohttp import web

from cocoon import keys
from cocoon.agent.simulated import DEFAULT_MEASUREMENT, SimulatedTee
from cocoon.attestation.evidence import NodeEvidence
from cocoon.meter import receipts
from cocoon.meter.identity import MeterIdentity, Placement

PRICE = {"per_request": 1000, "per_output_token": 100}
CREDENTIAL = "test-credential"


@dataclass
class Knobs:
    measurement: bytes = DEFAULT_MEASUREMENT
    stale_nonce: bytes | None = None  # answer every nonce with evidence for this old one
    certificate_age: timedelta = timedelta(0)
    flip_receipt_bit: bool = False
    foreign_receipt_key: bool = False
    wrong_request_hash: bool = False
    wrong_response_hash: bool = False
    close_after_attestation: bool = False
    no_receipt: bool = False


@dataclass
class Seen:
    method: str
    path: str
    body: bytes
    peer: object


@dataclass
class FakeMeter:
    sim: SimulatedTee
    knobs: Knobs = field(default_factory=Knobs)
    identity: MeterIdentity = field(
        default_factory=lambda: MeterIdentity.generate(Placement("tenant/chat", "pod-0", "n1")))
    seen: list[Seen] = field(default_factory=list)
    charged: dict[str, int] = field(default_factory=dict)

    def source(self, data: bytes) -> NodeEvidence:
        return self.sim.bound_evidence(data, gpus=1, measurement=self.knobs.measurement)

    def context(self) -> ssl.SSLContext:
        self.identity.issue_certificate(
            self.source, now=datetime.now(UTC) - self.knobs.certificate_age)
        return self.identity.server_context()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/.well-known/cocoon/attestation", self.attestation)
        app.router.add_post("/v2/models/{model}/generate", self.generate)
        app.router.add_post("/v2/models/{model}/infer", self.infer)
        app.router.add_post("/v2/models/{model}/generate_stream", self.generate_stream)
        app.router.add_get("/v1/models", self.openai_models)
        return app

    @web.middleware
    async def _record(self, request: web.Request,
                      handler: Callable[[web.Request], object]) -> web.StreamResponse:
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.seen.append(Seen(request.method, request.path, body, peer))
        return await handler(request)  # type: ignore[misc, no-any-return]

    async def attestation(self, request: web.Request) -> web.Response:
        nonce = bytes.fromhex(request.query["nonce"])
        doc = self.identity.evidence(self.knobs.stale_nonce or nonce, self.source)
        headers = {"Connection": "close"} if self.knobs.close_after_attestation else {}
        return web.Response(body=doc.model_dump_json(by_alias=True),
                            content_type="application/json", headers=headers)

    def _receipt(self, request: web.Request, body: bytes, answer: bytes, units: dict[str, int],
                 name: str) -> receipts.SignedReceipt:
        channel = "tenant/alpha"
        cost = sum(PRICE.get(f"per_{k.removesuffix('s')}", 0) * v for k, v in units.items())
        self.charged[channel] = self.charged.get(channel, 0) + cost
        key = MeterIdentity.generate().receipt_key if self.knobs.foreign_receipt_key else (
            self.identity.receipt_key)
        receipt = receipts.Receipt(
            format=receipts.FORMAT,
            request_id=os.urandom(16).hex(),
            meter_public_key=keys.public_bytes(key).hex(), pool="tenant/chat",
            channel=channel, model=request.match_info["model"], endpoint=name, outcome="ok",
            request_sha256=receipts.digest(body + b"x" * self.knobs.wrong_request_hash),
            response_sha256=receipts.digest(answer + b"x" * self.knobs.wrong_response_hash),
            units=units, price={k: str(v) for k, v in PRICE.items()}, cost_nanoton=str(cost),
            cumulative_nanoton=str(self.charged[channel]),
            issued_at=int(datetime.now(UTC).timestamp()),
        )
        signed = receipts.sign(receipt, key)
        if self.knobs.flip_receipt_bit:
            changed = receipt.model_copy(update={"cost_nanoton": str(cost ^ 1)})
            signed = signed.model_copy(update={"receipt": changed})
        return signed

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {CREDENTIAL}"

    async def generate(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": "no credential"}, status=401)
        body = await request.read()
        prompt = json.loads(body)["text_input"]
        answer = json.dumps({"model_name": request.match_info["model"],
                             "text_output": f"echo: {prompt}"}).encode()
        signed = self._receipt(request, body, answer, {"requests": 1, "output_tokens": 3},
                               "generate")
        headers = {} if self.knobs.no_receipt else {
            receipts.HEADER: receipts.encode_header(signed)}
        return web.Response(body=answer, content_type="application/json", headers=headers)

    async def infer(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": "no credential"}, status=401)
        body = await request.read()
        answer = json.dumps({"outputs": [{"name": "OUTPUT0", "datatype": "FP32",
                                          "shape": [1], "data": [3.0]}]}).encode()
        signed = self._receipt(request, body, answer, {"requests": 1}, "infer")
        return web.Response(body=answer, content_type="application/json",
                            headers={receipts.HEADER: receipts.encode_header(signed)})

    async def generate_stream(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return web.json_response({"error": "no credential"}, status=401)
        body = await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        sent = b""
        for word in ("one", "two", "three"):
            event = b"data: " + json.dumps({"text_output": word}).encode() + b"\n\n"
            sent += event
            await response.write(event)
        signed = self._receipt(request, body, sent, {"requests": 1, "output_tokens": 3},
                               "generate_stream")
        if not self.knobs.no_receipt:
            await response.write(f"event: {receipts.SSE_EVENT}\ndata: "
                                 f"{signed.model_dump_json(by_alias=True)}\n\n".encode())
        await response.write_eof()
        return response

    async def openai_models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": "llm", "object": "model", "created": 0, "owned_by": "cocoon"}]})

    def posts(self) -> list[Seen]:
        return [s for s in self.seen if s.method == "POST"]


class LoopThread:
    """An asyncio loop in a thread, so sync httpx clients can call servers it runs."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)  # type: ignore[arg-type]

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


async def serve(meter: FakeMeter) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(meter.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=meter.context())
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


