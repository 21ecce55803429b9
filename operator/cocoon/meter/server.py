"""Wire the meter together and run it until SIGTERM, then drain calls in flight."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

import grpc
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cocoon import keys
from cocoon.httpguard import GuardedAppRunner
from cocoon.meter.admin import admin_app
from cocoon.meter.core import Meter, MeterConfig
from cocoon.meter.credits import CreditSource, FileCreditSource
from cocoon.meter.errors import error_body
from cocoon.meter.grpc_proxy import GrpcProxy
from cocoon.meter.http_proxy import HttpProxy
from cocoon.meter.journal import Journal
from cocoon.meter.metrics import MeterMetrics
from cocoon.meter.operator_link import OperatorCreditSource, UsagePusher

log = logging.getLogger(__name__)

_GRPC_MAX_MESSAGE = 1 << 30
_GRPC_OPTIONS = (
    ("grpc.max_send_message_length", _GRPC_MAX_MESSAGE),
    ("grpc.max_receive_message_length", _GRPC_MAX_MESSAGE),
)


@dataclass(frozen=True)
class ServeOptions:
    config: MeterConfig
    upstream_http: str
    upstream_grpc: str
    journal: Path
    credits: Path | None
    signing_key: Path
    listen: str = "0.0.0.0"  # noqa: S104 - the data ports are the pod's public face
    http_port: int = 8000
    grpc_port: int = 8001
    admin_port: int = 9100
    drain_seconds: float = 25.0
    operator_url: str | None = None


def credit_source(options: ServeOptions, key: Ed25519PrivateKey) -> CreditSource:
    """The operator's credit endpoint in a cluster; a watched file when run by hand."""
    if options.operator_url:
        return OperatorCreditSource(options.operator_url, options.config.pool, key)
    if options.credits is None:
        raise ValueError("give --operator-url or --credits")
    return FileCreditSource(options.credits)


async def serve(options: ServeOptions, credits: CreditSource | None = None) -> None:
    key = keys.load(options.signing_key)
    journal = Journal(options.journal, sync=options.config.journal_sync)
    source = credits if credits is not None else credit_source(options, key)
    metrics = MeterMetrics(options.config.models)
    meter = Meter(options.config, source, journal, metrics)
    http = GuardedAppRunner(
        HttpProxy(meter, options.upstream_http, options.config.max_in_flight).app(),
        header_timeout=options.config.limits.header_timeout, error_body=error_body,
        access_log=None, handle_signals=False,
    )
    admin = web.AppRunner(
        admin_app(journal, metrics, options.config.pool, key), access_log=None
    )
    channel = grpc.aio.insecure_channel(options.upstream_grpc, options=_GRPC_OPTIONS)
    # gRPC reads a whole message before the handler runs, so its bound is the transport's.
    grpc_server = grpc.aio.server(options=(
        ("grpc.max_send_message_length", _GRPC_MAX_MESSAGE),
        ("grpc.max_receive_message_length", options.config.limits.body_limit("infer")),
    ))
    grpc_server.add_generic_rpc_handlers((GrpcProxy(meter, channel).handler(),))
    grpc_server.add_insecure_port(f"{options.listen}:{options.grpc_port}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await http.setup()
    await admin.setup()
    await web.TCPSite(http, options.listen, options.http_port).start()
    await web.TCPSite(admin, options.listen, options.admin_port).start()
    await grpc_server.start()
    watcher = asyncio.create_task(source.run())
    pusher = (
        asyncio.create_task(
            UsagePusher(options.operator_url, journal, options.config.pool, key).run()
        )
        if options.operator_url
        else None
    )
    log.info("meter serving", extra={
        "pool": options.config.pool, "httpPort": options.http_port,
        "grpcPort": options.grpc_port, "adminPort": options.admin_port,
        "journalSequence": journal.sequence,
    })
    try:
        await stop.wait()
    finally:
        log.info("meter draining", extra={"inFlight": meter.gate.in_flight})
        await grpc_server.stop(options.drain_seconds)
        await http.shutdown()
        await http.cleanup()
        await admin.cleanup()
        for task in (watcher, pusher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await channel.close()
        journal.close()
        log.info("meter stopped", extra={"journalSequence": journal.sequence})
