"""The KServe v2 HTTP front end (aiohttp), forwarding to Triton over pooled keep-alive connections.

Bodies pass through byte for byte (the binary tensor extension included). Metered responses carry
`Cocoon-Request-Id`, `Cocoon-Units` and `Cocoon-Cost-Nanoton` headers; generate_stream, whose
headers leave before the units are known, ends with a `cocoon.usage` SSE event instead (`event:
cocoon.usage` / `data: {"requestId", "units", "costNanoton"}`) and a signed `event:
cocoon.receipt`, which clients that only read unnamed `data:` events ignore. Unary responses carry
the signed receipt in the `Cocoon-Receipt` header. Health, readiness, metadata, config and model
statistics are open: probes need them without a credential, they hold no tenant data, and standard
tools (perf_analyzer's gRPC client) fetch them without custom metadata. Everything else Triton
serves besides inference (repository control, shared memory, trace, logging) is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web
from yarl import URL

from cocoon.meter import receipts
from cocoon.meter.core import Call, Meter
from cocoon.meter.credits import ChannelCredit
from cocoon.meter.errors import MeterError, Reason, upstream_error
from cocoon.meter.limits import read_body
from cocoon.meter.openai_routes import OpenAIRoutes
from cocoon.meter.pricing import Units
from cocoon.meter.upstream import UpstreamError, UpstreamPool
from cocoon.meter.usage import (
    SseMeter,
    UsageCounter,
    count_event,
    generate_usage,
    infer_usage,
    is_error_document,
)
from cocoon.meter.validate import HEADER_LENGTH, check_json

log = logging.getLogger(__name__)

# The body is forwarded decompressed (aiohttp decodes it while the meter bounds its size), so
# the caller's Content-Encoding is not.
_REQUEST_HEADERS = ("Content-Type", HEADER_LENGTH)
_RESPONSE_HEADERS = ("Content-Type", HEADER_LENGTH, "Content-Encoding")
_MODEL = "/v2/models/{model}"
_VERSIONED = "/v2/models/{model}/versions/{version}"

_session_key = web.AppKey("session", aiohttp.ClientSession)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error_response(exc: MeterError) -> web.Response:
    headers = {"Retry-After": "1"} if exc.reason is Reason.OVERLOADED else None
    return web.Response(
        status=exc.http_status, body=exc.body(), content_type="application/json", headers=headers
    )


def _pick(headers: object, names: tuple[str, ...]) -> dict[str, str]:
    get = headers.get  # type: ignore[attr-defined]
    return {name: value for name in names if (value := get(name)) is not None}


class HttpProxy:
    def __init__(self, meter: Meter, upstream: str, max_connections: int = 256) -> None:
        self.meter = meter
        self.upstream = upstream.rstrip("/")
        self.max_connections = max_connections
        url = URL(self.upstream)
        # Unary calls to a plain-HTTP Triton take the lean keep-alive client; streams and
        # passthroughs use aiohttp.
        self._pool: UpstreamPool | None = (
            UpstreamPool(url.host, url.port)
            if url.scheme == "http" and url.host and url.port and url.path in ("", "/")
            else None
        )

    def app(self, extra_routes: tuple[tuple[str, str, Handler], ...] = ()) -> web.Application:
        limits = self.meter.config.limits
        app = web.Application(client_max_size=max(limits.max_body_bytes.values()))
        app.cleanup_ctx.append(self._session_ctx)
        add = app.router.add_route
        for method, path, handler in extra_routes:
            add(method, path, handler)
        for base in (_MODEL, _VERSIONED):
            add("POST", base + "/infer", self.infer)
            add("POST", base + "/generate", self.generate)
            add("POST", base + "/generate_stream", self.generate_stream)
            add("GET", base + "/ready", self.open_passthrough)
            add("GET", base, self.open_passthrough)
            add("GET", base + "/config", self.open_passthrough)
            add("GET", base + "/stats", self.open_passthrough)
        add("GET", "/v2/health/live", self.open_passthrough)
        add("GET", "/v2/health/ready", self.open_passthrough)
        add("GET", "/v2", self.open_passthrough)
        OpenAIRoutes(self.meter, self.upstream).install(app)
        add("*", "/{tail:.*}", self.refuse)
        self._app = app
        return app

    async def _session_ctx(self, app: web.Application):  # type: ignore[no-untyped-def]
        connector = aiohttp.TCPConnector(
            limit=self.max_connections, keepalive_timeout=60, enable_cleanup_closed=True
        )
        session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding", "User-Agent"),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
        )
        app[_session_key] = session
        yield
        await session.close()
        if self._pool is not None:
            self._pool.close()

    def _url(self, request: web.Request) -> URL:
        return URL(self.upstream + request.raw_path, encoded=True)

    async def _passthrough(self, request: web.Request) -> web.Response:
        try:
            async with request.app[_session_key].get(self._url(request)) as upstream:
                body = await upstream.read()
                if upstream.status >= 400:  # Triton's refusals in the meter's documented shape
                    status, body = upstream_error(upstream.status, body)
                    return web.Response(status=status, body=body, content_type="application/json")
                return web.Response(
                    status=upstream.status, body=body, headers=_pick(upstream.headers,
                                                                     _RESPONSE_HEADERS)
                )
        except aiohttp.ClientError as exc:
            return _error_response(_upstream_down(exc))

    async def open_passthrough(self, request: web.Request) -> web.Response:
        return await self._passthrough(request)

    async def refuse(self, request: web.Request) -> web.Response:
        return _error_response(MeterError(
            Reason.FORBIDDEN,
            f"{request.method} {request.path} is not served through the meter; it serves "
            "inference (infer, generate, generate_stream), health, and model metadata",
        ))

    async def _admit(self, request: web.Request, endpoint: str) -> tuple[ChannelCredit, bytes]:
        """Authenticate, then read and check the body while holding only the channel's reading
        allowance: no credit and no pool slot is reserved until the whole body is in."""
        meter = self.meter
        credit = meter.authenticate(request.headers.get("Authorization"))
        try:
            with meter.reading.hold(credit.channel):
                body = await read_body(request, endpoint, meter.config.limits)
            check_json(body, request.headers, endpoint)
        except MeterError as exc:
            meter.metrics.rejections.labels(exc.reason.value).inc()
            raise
        return credit, body

    def _begin(
        self, request: web.Request, credit: ChannelCredit, endpoint: str, *,
        streaming: bool = False,
    ) -> Call:
        return self.meter.begin(
            credit, request.match_info["model"], "http", endpoint, streaming=streaming
        )

    async def infer(self, request: web.Request) -> web.Response:
        return await self._unary(request, "infer")

    async def generate(self, request: web.Request) -> web.Response:
        return await self._unary(request, "generate")

    async def _unary(self, request: web.Request, endpoint: str) -> web.Response:
        try:
            credit, body = await self._admit(request, endpoint)
            call = self._begin(request, credit, endpoint)
        except MeterError as exc:
            return _error_response(exc)
        try:
            call.request_sha256 = hashlib.sha256(body).hexdigest()
            start = time.perf_counter()
            try:
                status, payload, headers = await self._post(request, body)
            except (aiohttp.ClientError, UpstreamError) as exc:
                call.counter.failed = True
                await call.settle("upstream_unavailable")
                return _error_response(_upstream_down(exc))
            call.upstream_seconds = time.perf_counter() - start
            status, outcome = self._count_unary(call, endpoint, status, payload, headers)
            if outcome == "error":
                status, payload = upstream_error(status, payload)
                headers = {"Content-Type": "application/json"}
            elif not call.affordable(call.counter):
                call.counter = UsageCounter(failed=True)
                await call.settle("withheld")
                return _error_response(MeterError(
                    Reason.NO_CREDIT,
                    f"the response used more than payment channel {call.credit.channel} can "
                    "pay for, so it was withheld and not charged; top up the channel",
                ))
            call.response_sha256 = hashlib.sha256(payload).hexdigest()
            settlement = await call.settle(outcome)
            headers.update(settlement.headers())
            return web.Response(status=status, body=payload, headers=headers)
        finally:
            call.abandon()

    async def _post(
        self, request: web.Request, body: bytes
    ) -> tuple[int, bytes, dict[str, str]]:
        forwarded = _pick(request.headers, _REQUEST_HEADERS)
        if self._pool is not None:
            response = await self._pool.post(request.raw_path, body, forwarded)
            got = response.headers
            return response.status, response.body, {
                name: value for name in _RESPONSE_HEADERS
                if (value := got.get(name.lower())) is not None
            }
        async with request.app[_session_key].post(
            self._url(request), data=body, headers=forwarded
        ) as upstream:
            return upstream.status, await upstream.read(), _pick(upstream.headers,
                                                                 _RESPONSE_HEADERS)

    @staticmethod
    def _count_unary(
        call: Call, endpoint: str, status: int, payload: bytes, headers: dict[str, str]
    ) -> tuple[int, str]:
        """Count a complete response; returns the status to send and the outcome to journal."""
        if status >= 400:
            call.counter.failed = True
            return status, "error"
        if endpoint == "generate":
            if is_error_document(payload):
                # Triton answers generate on a multi-response model with 200 + error body.
                call.counter.failed = True
                return 400, "error"
            usage = generate_usage(json.loads(payload)) if b"_tokens" in payload else {}
        else:
            length = headers.get(HEADER_LENGTH)
            usage = infer_usage(payload, int(length) if length else None)
        call.counter.add_response(usage)
        return status, "ok"

    async def generate_stream(self, request: web.Request) -> web.StreamResponse:
        try:
            credit, body = await self._admit(request, "generate_stream")
            call = self._begin(request, credit, "generate_stream", streaming=True)
        except MeterError as exc:
            return _error_response(exc)
        try:
            return await self._stream(request, call, body)
        finally:
            call.abandon()

    async def _stream(self, request: web.Request, call: Call, body: bytes) -> web.StreamResponse:
        call.request_sha256 = hashlib.sha256(body).hexdigest()
        wait_start = time.perf_counter()
        try:
            upstream_cm = request.app[_session_key].post(
                self._url(request), data=body, headers=_pick(request.headers, _REQUEST_HEADERS)
            )
            upstream = await upstream_cm.__aenter__()
        except aiohttp.ClientError as exc:
            call.counter.failed = True
            await call.settle("upstream_unavailable")
            return _error_response(_upstream_down(exc))
        try:
            call.upstream_seconds += time.perf_counter() - wait_start
            if upstream.status != 200:
                payload = await upstream.read()
                call.counter.failed = True
                settlement = await call.settle("error")
                status, payload = upstream_error(upstream.status, payload)
                return web.Response(status=status, body=payload, headers={
                    "Content-Type": "application/json", **settlement.headers(),
                })
            response = web.StreamResponse(
                status=200,
                headers={
                    "Content-Type": upstream.headers.get("Content-Type", "text/event-stream"),
                    "Cache-Control": "no-cache",
                    "Cocoon-Request-Id": call.request_id,
                },
            )
            await response.prepare(request)
            sent = hashlib.sha256()
            outcome = await self._pump(call, upstream, response, sent)
            # the receipt covers every byte before it, the usage event included
            units = call.counter.units()
            usage = _usage_event(call.request_id, units, self.meter.cost(units))
            sent.update(usage)
            call.response_sha256 = sent.hexdigest()
            settlement = await call.settle(outcome)
            if outcome != "client_closed":
                with contextlib.suppress(ConnectionError, aiohttp.ClientConnectionResetError):
                    await response.write(usage + receipts.sse_event(settlement.receipt))
                    await response.write_eof()
            return response
        finally:
            await upstream_cm.__aexit__(None, None, None)

    async def _pump(
        self, call: Call, upstream: aiohttp.ClientResponse, response: web.StreamResponse,
        sent: hashlib._Hash,
    ) -> str:
        """Forward chunks as they arrive, counting each complete event and journaling the
        units so far before the chunk is sent."""
        events = SseMeter()
        chunks = upstream.content.iter_any().__aiter__()
        while True:
            wait_start = time.perf_counter()
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                break
            except aiohttp.ClientError:
                return "upstream_broken"
            finally:
                call.upstream_seconds += time.perf_counter() - wait_start
            trial = call.counter.copy()
            for event in events.split(chunk):
                count_event(trial, event)
            if not call.affordable(trial):
                error = _error_event(call)
                sent.update(error)
                try:
                    await response.write(error)
                except (ConnectionError, aiohttp.ClientConnectionResetError):
                    return "client_closed"
                return "credit_exhausted"
            delivered = call.counter
            await call.deliver(trial)  # journaled before it leaves
            sent.update(chunk)
            try:
                await response.write(chunk)
            except (ConnectionError, aiohttp.ClientConnectionResetError):
                call.counter = delivered  # not sent: the settled charge leaves it out
                return "client_closed"
        return "error" if call.counter.failed else "ok"


def _usage_event(request_id: str, units: Units, cost: int) -> bytes:
    data = json.dumps({
        "requestId": request_id,
        "units": units.as_dict(),
        "costNanoton": str(cost),
    })
    return f"event: cocoon.usage\ndata: {data}\n\n".encode()


def _error_event(call: Call) -> bytes:
    error = MeterError(
        Reason.NO_CREDIT,
        f"payment channel {call.credit.channel} ran out of credit mid-stream; the stream was "
        "cut and you are charged for the tokens sent; top up the channel",
    )
    return b"data: " + error.body() + b"\n\n"


def _upstream_down(exc: Exception) -> MeterError:
    log.warning("triton unreachable", extra={"error": type(exc).__name__})
    return MeterError(Reason.UPSTREAM, "the model server is not reachable; retry shortly")
