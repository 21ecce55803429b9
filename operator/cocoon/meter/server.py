"""Wire the meter together and run it until SIGTERM, then drain calls in flight.

The meter's keys are generated here, in memory, at every start: a new pod (or a restarted
container) is a new meter instance with a new identity. Unless `plaintext` is set, both data
ports serve TLS 1.3 with the attested key, and the meter refuses to start when it cannot get
evidence for it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cocoon.agent import sources
from cocoon.agent.simulated import SimulatedTee
from cocoon.httpguard import GuardedAppRunner
from cocoon.meter import evidence_source, prover
from cocoon.meter.admin import admin_app
from cocoon.meter.core import Meter, MeterConfig
from cocoon.meter.credits import CreditSource, FileCreditSource
from cocoon.meter.errors import error_body
from cocoon.meter.grpc_proxy import GrpcProxy
from cocoon.meter.http_proxy import HttpProxy
from cocoon.meter.identity import MeterIdentity, Placement
from cocoon.meter.journal import Journal
from cocoon.meter.metrics import MeterMetrics
from cocoon.meter.operator_link import OperatorCreditSource, Registrar, UsagePusher
from cocoon.meter.prover import ATTESTATION_PATH, Prover

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
    placement: Placement = field(default_factory=Placement)
    # where evidence for the meter's keys comes from; none of them: --plaintext only
    evidence_socket: Path | None = None
    configfs_tsm: Path | None = None
    simulated_tee: Path | None = None
    simulated_gpus: int = 1
    plaintext: bool = False
    certificate_refresh_seconds: float = 120.0
    token_file: Path | None = None
    operator_ca: Path | None = None
    operator_ca_pem: str | None = None
    listen: str = "0.0.0.0"  # noqa: S104 - the data ports are the pod's public face
    http_port: int = 8000
    grpc_port: int = 8001
    admin_port: int = 9100
    drain_seconds: float = 25.0
    operator_url: str | None = None
    report_interval_seconds: float = 1.0


def credit_source(
    options: ServeOptions, key: Ed25519PrivateKey, tls: ssl.SSLContext | None
) -> CreditSource:
    """The operator's credit endpoint in a cluster; a watched file when run by hand."""
    if options.operator_url:
        return OperatorCreditSource(options.operator_url, options.config.pool, key,
                                    ssl_context=tls)
    if options.credits is None:
        raise ValueError("give --operator-url or --credits")
    return FileCreditSource(options.credits)


def bound_source(options: ServeOptions) -> evidence_source.AsyncBoundSource:
    if options.evidence_socket is not None:
        return evidence_source.agent_socket(options.evidence_socket)
    if options.configfs_tsm is not None:
        return evidence_source.in_process(sources.hardware(options.configfs_tsm))
    if options.simulated_tee is not None:
        sim = SimulatedTee.load(options.simulated_tee)
        if options.placement.node:
            sim = sim.for_node(options.placement.node)
        return evidence_source.in_process(sources.simulated(sim, gpus=options.simulated_gpus))
    raise ValueError(
        "the meter needs evidence for its keys: --evidence-socket (node isolation), "
        "--configfs-tsm (pod isolation) or --simulated-tee (test clusters); --plaintext serves "
        "unattested plain HTTP instead"
    )


def _grpc_server(
    options: ServeOptions, proxy: GrpcProxy, attested: Prover | None
) -> grpc.aio.Server:
    # gRPC reads a whole message before the handler runs, so its bound is the transport's.
    server = grpc.aio.server(options=(
        ("grpc.max_send_message_length", _GRPC_MAX_MESSAGE),
        ("grpc.max_receive_message_length", options.config.limits.body_limit("infer")),
    ))
    server.add_generic_rpc_handlers((proxy.handler(),))
    address = f"{options.listen}:{options.grpc_port}"
    if attested is not None:
        server.add_secure_port(address, attested.grpc_credentials())
    else:
        server.add_insecure_port(address)
    return server


def _jobs(
    options: ServeOptions, source: CreditSource, journal: Journal, key: Ed25519PrivateKey,
    *, attested: Prover | None, operator_tls: ssl.SSLContext | None,
) -> list[Coroutine[object, object, None]]:
    """What runs beside the servers: credit, certificate refresh, usage, registration."""
    jobs = [source.run()]
    if attested is not None:
        jobs.append(attested.refresh_forever())
    if options.operator_url:
        pool = options.config.pool
        jobs.append(UsagePusher(options.operator_url, journal, pool, key,
                                interval_seconds=options.report_interval_seconds,
                                ssl_context=operator_tls).run())
        if attested is not None and options.token_file is not None:
            jobs.append(Registrar(options.operator_url, attested, options.token_file,
                                  journal.journal_id, ssl_context=operator_tls).run())
    return jobs


async def serve(options: ServeOptions, credits: CreditSource | None = None) -> None:
    identity = MeterIdentity.generate(options.placement)
    key = identity.receipt_key
    attested: Prover | None = None
    if not options.plaintext:
        attested = Prover(identity, bound_source(options),
                          refresh_seconds=options.certificate_refresh_seconds)
        await attested.issue_certificate()
    operator_tls = (
        ssl.create_default_context(
            cafile=str(options.operator_ca) if options.operator_ca else None,
            cadata=options.operator_ca_pem,
        )
        if options.operator_ca is not None or options.operator_ca_pem
        else None
    )
    journal = Journal(options.journal, sync=options.config.journal_sync)
    source = credits if credits is not None else credit_source(options, key, operator_tls)
    metrics = MeterMetrics(options.config.models)
    meter = Meter(options.config, source, journal, metrics, receipt_key=key)
    route = attested.attestation if attested is not None else prover.plaintext_attestation
    http = GuardedAppRunner(
        HttpProxy(meter, options.upstream_http, options.config.max_in_flight).app(
            (("GET", ATTESTATION_PATH, route),)
        ),
        header_timeout=options.config.limits.header_timeout, error_body=error_body,
        access_log=None, handle_signals=False,
    )
    admin = web.AppRunner(
        admin_app(journal, metrics, options.upstream_http), access_log=None
    )
    channel = grpc.aio.insecure_channel(options.upstream_grpc, options=_GRPC_OPTIONS)
    grpc_server = _grpc_server(options, GrpcProxy(meter, channel), attested)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await http.setup()
    await admin.setup()
    tls = attested.server_context() if attested is not None else None
    await web.TCPSite(http, options.listen, options.http_port, ssl_context=tls).start()
    await web.TCPSite(admin, options.listen, options.admin_port).start()
    await grpc_server.start()
    tasks = [asyncio.create_task(job) for job in _jobs(
        options, source, journal, key, attested=attested, operator_tls=operator_tls
    )]
    log.info("meter serving", extra={
        "pool": options.config.pool, "httpPort": options.http_port,
        "grpcPort": options.grpc_port, "adminPort": options.admin_port,
        "journalSequence": journal.sequence, "tls": attested is not None,
        "receiptKey": identity.receipt_public_hex,
    })
    try:
        await stop.wait()
    finally:
        log.info("meter draining", extra={"inFlight": meter.gate.in_flight})
        await grpc_server.stop(options.drain_seconds)
        await http.shutdown()
        await http.cleanup()
        await admin.cleanup()
        for task in reversed(tasks):
            await prover.stop(task)
        await channel.close()
        journal.close()
        log.info("meter stopped", extra={"journalSequence": journal.sequence})
