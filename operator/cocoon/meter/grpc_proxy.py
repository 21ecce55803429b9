"""The KServe v2 gRPC front end: a bytes-level proxy built on grpc.aio generic handlers.

Messages are never deserialised: requests and responses are forwarded as the bytes received,
and `wire` scans only the fields metering needs. Metered calls end with trailing metadata
`cocoon-request-id`, `cocoon-units` and `cocoon-cost-nanoton`. Each request on a ModelStreamInfer
stream is its own journaled call (grpc_stream). Health, readiness, metadata, config and
statistics are open (see http_proxy for why); repository, shared-memory, trace and log methods
are refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from cocoon.meter import receipts, wire
from cocoon.meter.core import Call, Meter, Settlement
from cocoon.meter.errors import MeterError, Reason
from cocoon.meter.grpc_stream import StreamCharges
from cocoon.meter.usage import UsageCounter

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
_OPEN = (
    "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelConfig",
    "ModelStatistics",
)
_REFUSED = (
    "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload",
    "SystemSharedMemoryStatus", "SystemSharedMemoryRegister", "SystemSharedMemoryUnregister",
    "CudaSharedMemoryStatus", "CudaSharedMemoryRegister", "CudaSharedMemoryUnregister",
    "TraceSetting", "LogSettings",
)
_DROPPED_METADATA = frozenset({"authorization", "user-agent"})
Metadata = tuple[tuple[str, str | bytes], ...]
Context = Any  # grpc.aio.ServicerContext; grpc ships no type information


def _authorization(metadata: Metadata) -> str | None:
    for key, value in metadata:
        if key == "authorization":
            return value if isinstance(value, str) else value.decode()
    return None


def _forwarded(metadata: Metadata) -> Metadata:
    return tuple(
        (k, v) for k, v in metadata if k not in _DROPPED_METADATA and not k.startswith("grpc-")
    )


def _trailers(settlement: Settlement) -> Metadata:
    trailers: Metadata = (
        ("cocoon-request-id", settlement.request_id),
        ("cocoon-units", settlement.units.header()),
        ("cocoon-cost-nanoton", str(settlement.cost_nanoton)),
    )
    if settlement.receipt is not None:
        trailers += ((receipts.GRPC_TRAILER, receipts.encode_header(settlement.receipt)),)
    return trailers


class GrpcProxy:
    def __init__(self, meter: Meter, channel: grpc.aio.Channel) -> None:
        self.meter = meter
        self._unary = {name: channel.unary_unary(f"/{SERVICE}/{name}") for name in _OPEN}
        self._infer = channel.unary_unary(f"/{SERVICE}/ModelInfer")
        self._stream_infer = channel.stream_stream(f"/{SERVICE}/ModelStreamInfer")

    def handler(self) -> grpc.GenericRpcHandler:
        handlers: dict[str, grpc.RpcMethodHandler] = {
            "ModelInfer": grpc.unary_unary_rpc_method_handler(self.model_infer),
            "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(self.model_stream_infer),
        }
        for name in _OPEN:
            handlers[name] = grpc.unary_unary_rpc_method_handler(self._passthrough(name))
        for name in _REFUSED:
            handlers[name] = grpc.unary_unary_rpc_method_handler(self._refuse(name))
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    def _passthrough(self, name: str) -> Callable[[bytes, Context], Awaitable[bytes]]:
        method = self._unary[name]

        async def forward(request: bytes, context: Context) -> bytes:
            metadata = context.invocation_metadata()
            try:
                response: bytes = await method(
                    request, metadata=_forwarded(metadata), timeout=context.time_remaining()
                )
            except grpc.aio.AioRpcError as exc:
                await context.abort(exc.code(), exc.details() or "")
            return response

        return forward

    @staticmethod
    def _refuse(name: str) -> Callable[[bytes, Context], Awaitable[bytes]]:
        error = MeterError(
            Reason.FORBIDDEN,
            f"{name} is not served through the meter; it serves inference, health and metadata",
        )

        async def refuse(request: bytes, context: Context) -> bytes:
            await context.abort(error.grpc_status, error.grpc_message)
            raise AssertionError("abort returned")

        return refuse

    async def _begin(self, context: Context, model: str) -> Call:
        try:
            return self.meter.begin(
                _authorization(context.invocation_metadata()), model, "grpc", "infer"
            )
        except MeterError as exc:
            await context.abort(exc.grpc_status, exc.grpc_message)
            raise

    async def model_infer(self, request: bytes, context: Context) -> bytes:
        try:
            model = wire.model_name(request)
        except wire.WireError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed request: {exc}")
            raise
        call = await self._begin(context, model)
        call.request_sha256 = hashlib.sha256(request).hexdigest()
        try:
            start = time.perf_counter()
            try:
                response: bytes = await self._infer(
                    request,
                    metadata=_forwarded(context.invocation_metadata()),
                    timeout=context.time_remaining(),
                )
            except grpc.aio.AioRpcError as exc:
                call.counter.failed = True
                settlement = await call.settle("error")
                await context.abort(exc.code(), exc.details() or "", _trailers(settlement))
                raise
            call.upstream_seconds = time.perf_counter() - start
            call.response_sha256 = hashlib.sha256(response).hexdigest()
            call.counter.add_response(wire.response_usage(response))
            if not call.affordable(call.counter):
                call.counter = UsageCounter(failed=True)
                settlement = await call.settle("withheld")
                error = _withheld(call)
                await context.abort(error.grpc_status, error.grpc_message, _trailers(settlement))
            settlement = await call.settle("ok")
            context.set_trailing_metadata(_trailers(settlement))
            return response
        finally:
            call.abandon()

    async def model_stream_infer(
        self, requests: AsyncIterator[bytes], context: Context
    ) -> None:
        try:
            credit = self.meter.authenticate(_authorization(context.invocation_metadata()))
        except MeterError as exc:
            await context.abort(exc.grpc_status, exc.grpc_message)
            raise
        charges = StreamCharges(self.meter, credit)
        upstream = self._stream_infer(metadata=_forwarded(context.invocation_metadata()))
        failure: list[MeterError] = []

        async def feed() -> None:
            try:
                async for message in requests:
                    charges.add_request(message)
                    await upstream.write(message)
                await upstream.done_writing()
            except (MeterError, wire.WireError) as exc:
                failure.append(
                    exc if isinstance(exc, MeterError)
                    else MeterError(Reason.BAD_REQUEST, f"malformed request: {exc}")
                )
                upstream.cancel()

        feeder = asyncio.create_task(feed())
        outcome = "ok"
        upstream_error: grpc.aio.AioRpcError | None = None
        try:
            outcome = await self._pump(charges, upstream, context)
        except MeterError as exc:
            failure.append(exc)
        except (grpc.aio.AioRpcError, wire.WireError) as exc:
            outcome = "upstream_broken"
            upstream_error = exc if isinstance(exc, grpc.aio.AioRpcError) else None
        except asyncio.CancelledError:
            outcome = "client_closed"
            raise
        finally:
            feeder.cancel()
            upstream.cancel()
            if failure:
                outcome = "credit_exhausted" if failure[0].reason is Reason.NO_CREDIT else "error"
            try:
                await charges.close(outcome)
            finally:
                charges.abandon()
            context.set_trailing_metadata(charges.trailers())
        if failure:
            await context.abort(failure[0].grpc_status, failure[0].grpc_message,
                                charges.trailers())
        if upstream_error is not None and upstream_error.code() != grpc.StatusCode.CANCELLED:
            await context.abort(upstream_error.code(), upstream_error.details() or "",
                                charges.trailers())

    @staticmethod
    async def _pump(charges: StreamCharges, upstream: Any, context: Context) -> str:
        """Forward responses, each counted and journaled before it is sent (one beyond credit
        is not sent: StreamCharges.forward raises)."""
        while True:
            message = await upstream.read()
            if message is grpc.aio.EOF:
                return "ok"
            await charges.forward(message, context.write)


def _withheld(call: Call) -> MeterError:
    return MeterError(
        Reason.NO_CREDIT,
        f"the response used more than payment channel {call.credit.channel} can pay for, so "
        "it was withheld and not charged; top up the channel",
    )
