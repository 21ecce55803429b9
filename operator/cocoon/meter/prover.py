"""How a meter proves itself: the RA-TLS certificate, the attestation route, fresh documents.

`Prover` owns the meter's in-memory identity and its evidence source. It issues the TLS
certificate (evidence for a time-derived nonce in an extension) and re-issues it before the
evidence gets older than `refresh_seconds`, reloading the live TLS contexts in place. It answers
`GET /.well-known/cocoon/attestation?nonce=<64 hex>` with evidence for the caller's own nonce;
that costs a TEE report (about 50 ms on TDX), so the route is rate-limited and concurrent
requests share the evidence source one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from datetime import UTC, datetime

import grpc
from aiohttp import web

from cocoon.agent.meter_socket import TokenBucket
from cocoon.attestation import endpoint
from cocoon.attestation.endpoint import EndpointEvidence
from cocoon.meter.evidence_source import AsyncBoundSource, EvidenceUnavailable
from cocoon.meter.identity import MeterIdentity

log = logging.getLogger(__name__)

ATTESTATION_PATH = "/.well-known/cocoon/attestation"


def _error(status: int, reason: str, message: str) -> web.Response:
    return web.json_response({"error": {"reason": reason, "message": message}}, status=status)


class Prover:
    def __init__(
        self, identity: MeterIdentity, source: AsyncBoundSource, *,
        refresh_seconds: float = 120.0, rate: float = 10.0, burst: int = 20,
    ) -> None:
        self.identity = identity
        self.source = source
        self.refresh_seconds = refresh_seconds
        self._bucket = TokenBucket(rate, burst)
        self._lock = asyncio.Lock()
        self._contexts: list[ssl.SSLContext] = []
        self._on_reissue: list[Callable[[], None]] = []

    async def document(self, nonce: bytes, now: datetime | None = None) -> EndpointEvidence:
        report_data = endpoint.report_data(nonce, self.identity.keys)
        async with self._lock:
            bound = await self.source(report_data)
        return self.identity.document(nonce, bound, now=now)

    async def issue_certificate(self) -> None:
        issued = datetime.now(UTC).replace(microsecond=0)
        nonce = endpoint.certificate_nonce(int(issued.timestamp()))
        self.identity.certificate_for(await self.document(nonce, issued))
        for context in self._contexts:
            self.identity.load_into(context)
        for callback in self._on_reissue:
            callback()

    def server_context(self) -> ssl.SSLContext:
        context = self.identity.server_context()
        self._contexts.append(context)
        return context

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """gRPC's TLS from PEM in memory; a re-issued certificate is picked up at the next
        handshake (gRPC asks `fetch` each time; None keeps the current one)."""

        def configuration() -> grpc.ServerCertificateConfiguration:
            return grpc.ssl_server_certificate_configuration(
                [(self.identity.tls_key_pem(), self.identity.certificate_pem())]
            )

        fresh: list[grpc.ServerCertificateConfiguration] = []

        def reissued() -> None:
            fresh.append(configuration())

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            return fresh.pop() if fresh else None

        self._on_reissue.append(reissued)
        return grpc.dynamic_ssl_server_credentials(configuration(), fetch)

    async def refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            try:
                await self.issue_certificate()
            except EvidenceUnavailable as exc:
                log.warning("certificate not re-issued; keeping the current one",
                            extra={"error": str(exc)[:200]})

    async def attestation(self, request: web.Request) -> web.Response:
        try:
            nonce = bytes.fromhex(request.query.get("nonce", ""))
        except ValueError:
            nonce = b""
        if len(nonce) != endpoint.NONCE_BYTES:
            return _error(400, "BadNonce", "send ?nonce=<64 hex characters>: 32 random bytes "
                          "of your own, so the evidence can only be made for you, now")
        if not self._bucket.take():
            return _error(429, "RateLimited", "evidence is expensive to make; retry in a second "
                          "or verify the evidence in the TLS certificate")
        try:
            document = await self.document(nonce)
        except EvidenceUnavailable as exc:
            log.warning("attestation evidence unavailable", extra={"error": str(exc)[:200]})
            return _error(503, "EvidenceUnavailable",
                          "this meter cannot produce evidence right now; retry shortly")
        return web.json_response(document.to_api(), headers={"Cache-Control": "no-store"})


async def plaintext_attestation(request: web.Request) -> web.Response:
    return _error(404, "NotAttested", "this meter serves plain HTTP (--plaintext) and cannot "
                  "prove what it runs on; do not send it anything you would not send a stranger")


async def stop(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
