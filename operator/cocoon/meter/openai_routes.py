"""OpenAI-compatible routes of the meter: /v1/chat/completions, /v1/completions, /v1/models.

Each completion is one metered call on the pool's model through Triton's generate_stream
(streaming or not: a decoupled model answers only there). Before forwarding, the credit gate
reserves the worst case, one request plus the prompt (counted) plus `max_tokens` completion
tokens; the settled cost, journaled before the last byte leaves, releases the rest. The usage
a client sees (the final `usage` chunk, or `usage` of a whole response) is the journaled units,
with the request id and cost under `cocoon`. Wire translation lives in `openai_wire`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from cocoon.meter import openai_wire as wire
from cocoon.meter import receipts
from cocoon.meter.core import Call, Meter
from cocoon.meter.errors import MeterError, Reason
from cocoon.meter.pricing import Units
from cocoon.meter.prompt_tokens import PromptCounter
from cocoon.meter.usage import SseMeter, generate_usage, is_error_document

log = logging.getLogger(__name__)

_session_key = web.AppKey("openai_session", aiohttp.ClientSession)
_WRITE_ERRORS = (ConnectionError, aiohttp.ClientConnectionResetError)
MAX_BODY_BYTES = 2 << 20  # ~500k tokens of prompt: beyond any context a pool serves


def _error(exc: MeterError) -> web.Response:
    code = exc.code if isinstance(exc, wire.BadRequest) else None
    param = exc.param if isinstance(exc, wire.BadRequest) else None
    headers = {"Retry-After": "1"} if exc.reason is Reason.OVERLOADED else None
    return web.Response(status=exc.http_status, body=wire.error_body(exc, code, param),
                        content_type="application/json", headers=headers)


def _upstream_message(payload: bytes) -> str:
    """Triton's error text (plain or as an SSE event) without the model's traceback."""
    payload = payload.strip()
    if payload.startswith(b"data:"):
        payload = payload[5:]
    try:
        text = str(json.loads(payload).get("error", ""))
    except (ValueError, AttributeError):
        text = ""
    return text.split("\n", 1)[0][:500] or "the model refused the request"


async def _read_json(request: web.Request) -> tuple[Any, bytes]:
    """The body as JSON, read only up to MAX_BODY_BYTES: prompts are tokenized on the event
    loop, so their size is bounded before any work is done on them."""
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise _too_large()
    data = bytearray()
    async for piece in request.content.iter_chunked(1 << 16):
        data += piece
        if len(data) > MAX_BODY_BYTES:
            raise _too_large()
    try:
        return json.loads(data), bytes(data)
    except ValueError:
        raise wire.BadRequest("the request body is not valid JSON") from None


def _too_large() -> wire.BadRequest:
    return wire.BadRequest(
        f"the request body exceeds {MAX_BODY_BYTES} bytes; shorten the prompt",
        code="request_too_large",
    )


class OpenAIRoutes:
    def __init__(self, meter: Meter, upstream: str) -> None:
        self.meter = meter
        self.upstream = upstream.rstrip("/")
        tokenizer = meter.config.tokenizer
        self.prompts = PromptCounter(Path(tokenizer) if tokenizer else None)

    def install(self, app: web.Application) -> None:
        app.cleanup_ctx.append(self._session_ctx)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_get("/v1/models", self.models)

    async def _session_ctx(self, app: web.Application) -> AsyncIterator[None]:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.meter.config.max_in_flight),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
        )
        app[_session_key] = session
        yield
        await session.close()

    async def models(self, request: web.Request) -> web.Response:
        try:
            self.meter.authenticate(request.headers.get("Authorization"))
        except MeterError as exc:
            return _error(exc)
        return web.json_response(wire.models_list(self.meter.config.models,
                                                  self.meter.config.pool))

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=False)

    def _check_model(self, parsed: wire.GenerateRequest) -> None:
        if parsed.model not in self.meter.config.models:
            raise MeterError(Reason.NOT_FOUND, f"model '{parsed.model}' is not served by this "
                             "pool; GET /v1/models lists the ones it serves")

    def _begin(self, request: web.Request, parsed: wire.GenerateRequest,
               counted: int | None) -> Call:
        """Reserve the worst case: one request, the prompt, and max_tokens of completion."""
        prompt_bound = self.prompts.bound(parsed.prompt) if counted is None else counted
        worst = self.meter.cost(Units(1, prompt_bound, parsed.max_tokens))
        return self.meter.begin(request.headers.get("Authorization"), parsed.model, "http",
                                "chat.completions" if parsed.chat else "completions",
                                streaming=True, reserve=worst)

    async def _complete(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        try:
            self.meter.authenticate(request.headers.get("Authorization"))
            body, raw = await _read_json(request)
            parsed = wire.parse(body, chat=chat,
                                default_max_tokens=self.meter.config.reserve_output_tokens)
            self._check_model(parsed)
            counted = await self.prompts.count(parsed.prompt)
            call = self._begin(request, parsed, counted)
        except MeterError as exc:
            return _error(exc)
        call.request_sha256 = hashlib.sha256(raw).hexdigest()
        try:
            return await self._forward(request, parsed, call, counted)
        finally:
            call.abandon()

    async def _forward(self, request: web.Request, parsed: wire.GenerateRequest, call: Call,
                       counted: int | None) -> web.StreamResponse:
        url = f"{self.upstream}/v2/models/{parsed.model}/generate_stream"
        wait_start = time.perf_counter()
        try:
            upstream_cm = request.app[_session_key].post(url, json=parsed.kserve_body())
            upstream = await upstream_cm.__aenter__()
        except aiohttp.ClientError:
            call.counter.failed = True
            await call.settle("upstream_unavailable")
            return _error(MeterError(Reason.UPSTREAM, "the model server is not reachable; "
                                     "retry shortly"))
        try:
            call.upstream_seconds += time.perf_counter() - wait_start
            if upstream.status != 200:
                payload = await upstream.read()
                call.counter.failed = True
                await call.settle("error")
                return _error(wire.BadRequest(_upstream_message(payload), code="model_error"))
            stream = _Stream(self, request, parsed, call, counted)
            return await stream.run(upstream)
        finally:
            await upstream_cm.__aexit__(None, None, None)


class _Stream:
    """One completion in flight: reads Triton's events, charges them, writes OpenAI's."""

    def __init__(self, routes: OpenAIRoutes, request: web.Request,
                 parsed: wire.GenerateRequest, call: Call, counted: int | None) -> None:
        self.routes = routes
        self.request = request
        self.parsed = parsed
        self.call = call
        self.counted = counted
        self.created = int(time.time())
        self.text: list[str] = []
        self.finish = "length"
        self.error: str | None = None
        self.response: web.StreamResponse | None = None
        self.sent = hashlib.sha256()  # every byte written, for the receipt
        self._prefix, self._suffix = wire.text_chunk_template(parsed, call.request_id,
                                                              self.created)

    def _chunk(self, **kwargs: Any) -> bytes:
        return wire.chunk(self.parsed, self.call.request_id, self.created, **kwargs)

    async def _start(self) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
            "Cocoon-Request-Id": self.call.request_id,
        })
        await response.prepare(self.request)
        first = self._chunk(role=True, text="") if self.parsed.chat else self._chunk(text="")
        self.sent.update(first)
        await response.write(first)
        return response

    async def run(self, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
        if self.parsed.stream:
            try:
                self.response = await self._start()
            except _WRITE_ERRORS:
                await self.call.settle("client_closed")
                return web.Response(status=499)
        outcome = await self._pump(upstream)
        call = self.call
        if call.counter.input_tokens == 0 and self.counted and not call.counter.failed:
            call.counter.input_tokens = self.counted  # the model did not report its prompt
        # The receipt covers every byte sent before it: the whole body of an answer (it rides
        # in the Cocoon-Receipt header), or a stream up to its closing `cocoon.receipt` event,
        # which follows `data: [DONE]` so that OpenAI clients never see it.
        units = call.counter.units()
        cost = self.routes.meter.cost(units)
        if self.response is None:
            if self.error is not None and not self.text:
                await call.settle(outcome)
                return _error(wire.BadRequest(self.error, code="model_error"))
            body = json.dumps(wire.response(
                self.parsed, call.request_id, self.created, text="".join(self.text),
                finish=self.finish, units=units, cost=cost,
            )).encode()
            call.response_sha256 = hashlib.sha256(body).hexdigest()
            settlement = await call.settle(outcome)
            return web.Response(body=body, content_type="application/json",
                                headers=settlement.headers())
        tail = self._chunk(finish=self.finish) if self.error is None else \
            b"data: " + wire.error_body(wire.BadRequest(self.error, code="model_error")) \
            + b"\n\n"
        if self.parsed.include_usage:
            tail += self._chunk(units=units, cost=cost)
        tail += wire.DONE
        self.sent.update(tail)
        call.response_sha256 = self.sent.hexdigest()
        settlement = await call.settle(outcome)
        if outcome != "client_closed":
            with contextlib.suppress(*_WRITE_ERRORS):
                await self.response.write(tail + receipts.sse_event(settlement.receipt))
                await self.response.write_eof()
        return self.response

    async def _pump(self, upstream: aiohttp.ClientResponse) -> str:
        events = SseMeter()
        call = self.call
        chunks = upstream.content.iter_any().__aiter__()
        while True:
            wait_start = time.perf_counter()
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                break
            except aiohttp.ClientError:
                self.error = "the model server broke the stream"
                return "upstream_broken"
            finally:
                call.upstream_seconds += time.perf_counter() - wait_start
            trial = call.counter.copy()
            pieces = [p for event in events.split(chunk) if (p := self._event(trial, event))]
            if not call.affordable(trial):
                self.error = (f"payment channel {call.credit.channel} ran out of credit; the "
                              "completion was cut and you are charged for the tokens sent")
                return "credit_exhausted"
            delivered = call.counter
            if self.response is None:
                call.counter = trial  # nothing leaves before the whole answer is settled
            else:
                await call.deliver(trial, self.counted or 0)  # journaled before it leaves
            self.text += pieces
            if self.response is not None and pieces:
                data = b"".join(
                    self._prefix + json.dumps(p).encode() + self._suffix for p in pieces)
                self.sent.update(data)
                try:
                    await self.response.write(data)
                except _WRITE_ERRORS:
                    call.counter = delivered  # not sent: the settled charge leaves it out
                    return "client_closed"
        if call.counter.failed:
            return "error"
        return "ok"

    def _event(self, counter: Any, event: bytes) -> str:
        """Count one Triton event; returns its text (empty for none)."""
        payload = event.strip()
        if not payload.startswith(b"data:"):
            return ""
        payload = payload[5:].lstrip()
        if is_error_document(payload):
            counter.failed = True
            self.error = _upstream_message(payload)
            return ""
        document = json.loads(payload)
        counter.add_response(generate_usage(document))
        finish = document.get("finish_reason")
        if finish in ("stop", "length"):
            self.finish = finish
        text = document.get("text_output", "")
        return text if isinstance(text, str) else ""
