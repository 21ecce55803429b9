"""The meter's conversations with the operator: registration, credit in, signed usage out.

Registration: the meter asks the operator for a challenge, gets evidence for it bound to its
in-memory keys, and posts it with its pod-bound ServiceAccount token
(`POST /meters/v1/register`). The operator appraises the evidence, checks through TokenReview
that the token belongs to a pod of this pool on the node the evidence comes from, and records
the meter's receipt key in the pool's status; only recorded keys may report usage or read
credit. The meter registers again before the record expires.

Credit: the meter polls `GET /usage/v1/credit/<ns>/<pool>`, each poll signed afresh with its
receipt key (`Cocoon-Signature`, cocoon.signed_request), and keeps the last good table (the same
document the file source reads), so a top-up reaches callers within one poll and an unreachable
operator never locks callers out of credit they already had.

Usage: after calls are journaled, the meter POSTs each channel's cumulative report, signed with
the node workload key, to `/usage/v1/reports`. Reports are cumulative, so a lost or repeated
POST costs nothing; the operator keeps the highest journal sequence per meter.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from cocoon import signed_request
from cocoon.meter.admin import usage_reports
from cocoon.meter.credits import ChannelCredit, parse_credit_file
from cocoon.meter.evidence_source import EvidenceUnavailable
from cocoon.meter.journal import Journal
from cocoon.meter.prover import Prover

log = logging.getLogger(__name__)
_TIMEOUT = aiohttp.ClientTimeout(total=10)


class OperatorCreditSource:
    """A CreditSource fed by the operator's credit endpoint."""

    def __init__(
        self, operator_url: str, pool: str, key: Ed25519PrivateKey, poll_seconds: float = 2.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        namespace, name = pool.split("/", 1)
        self.path = f"/usage/v1/credit/{namespace}/{name}"
        self.url = f"{operator_url.rstrip('/')}{self.path}"
        self.key = key
        self.poll_seconds = poll_seconds
        self.ssl_context = ssl_context
        self._table: dict[str, ChannelCredit] = {}

    def lookup(self, credential_sha256: str) -> ChannelCredit | None:
        return self._table.get(credential_sha256)

    async def refresh(self, session: aiohttp.ClientSession) -> bool:
        """One poll; True when a table was loaded. Failures keep the last good table."""
        try:
            tls = _ssl(self.ssl_context)
            signature = signed_request.sign(self.key, "GET", self.path)
            async with session.get(
                self.url, timeout=_TIMEOUT, ssl=tls, headers={signed_request.HEADER: signature}
            ) as response:
                text = await response.text()
                if response.status != 200:
                    log.warning(
                        "operator refused credit poll",
                        extra={"status": response.status, "body": text[:300]},
                    )
                    return False
            self._table = parse_credit_file(text)
        except (aiohttp.ClientError, TimeoutError, ValidationError, ValueError) as exc:
            log.warning(
                "credit poll failed; keeping the last table", extra={"error": type(exc).__name__}
            )
            return False
        return True

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                await self.refresh(session)
                await asyncio.sleep(self.poll_seconds)


@dataclass
class UsagePusher:
    """Sends each channel's cumulative signed report when it changed since the last accepted one."""

    operator_url: str
    journal: Journal
    pool: str
    key: Ed25519PrivateKey
    interval_seconds: float = 1.0
    ssl_context: ssl.SSLContext | None = None
    _accepted: dict[str, tuple[str, dict[str, int]]] = field(default_factory=dict)

    async def push_once(self, session: aiohttp.ClientSession) -> int:
        """Send what changed; returns how many reports the operator accepted."""
        accepted = 0
        url = f"{self.operator_url.rstrip('/')}/usage/v1/reports"
        for envelope in usage_reports(self.journal, self.pool, self.key):
            report = envelope.report
            state = (report.cost_nanoton, report.units.model_dump())
            if self._accepted.get(report.channel) == state:
                continue
            try:
                async with session.post(
                    url, json=envelope.to_api(), timeout=_TIMEOUT, ssl=_ssl(self.ssl_context)
                ) as resp:
                    if resp.status == 200:
                        self._accepted[report.channel] = state
                        accepted += 1
                    elif resp.status in (429, 503):
                        # the operator asks for a pause: the rest waits for the next round
                        log.info("operator asked to slow down", extra={"status": resp.status})
                        break
                    elif resp.status == 410:
                        # The channel is gone: resending the same figures cannot succeed.
                        self._accepted[report.channel] = state
                        log.info("channel gone; its usage is no longer reported",
                                 extra={"channel": report.channel})
                    else:
                        log.warning(
                            "operator refused a usage report",
                            extra={
                                "status": resp.status,
                                "channel": report.channel,
                                "body": (await resp.text())[:300],
                            },
                        )
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning(
                    "usage report not delivered; will retry",
                    extra={"error": type(exc).__name__, "channel": report.channel},
                )
        return accepted

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            try:
                while True:
                    await self.push_once(session)
                    await asyncio.sleep(self.interval_seconds)
            finally:
                # a last report on shutdown, so a drained pod leaves nothing unreported
                await asyncio.shield(self.push_once(session))


def _ssl(context: ssl.SSLContext | None) -> ssl.SSLContext | bool:
    return context if context is not None else True


@dataclass
class Registrar:
    """Keeps this meter instance registered with the operator."""

    operator_url: str
    prover: Prover
    token_file: Path
    journal_id: str
    ssl_context: ssl.SSLContext | None = None
    retry_seconds: float = 2.0
    registered: asyncio.Event = field(default_factory=asyncio.Event)

    async def register_once(self, session: aiohttp.ClientSession) -> float:
        """Register; returns how long to wait before registering again."""
        base = self.operator_url.rstrip("/")
        tls = _ssl(self.ssl_context)
        async with session.get(f"{base}/meters/v1/challenge", timeout=_TIMEOUT, ssl=tls) as r:
            challenge = await r.json(content_type=None)
            if r.status != 200:
                raise RegistrationRefused(r.status, challenge)
        document = await self.prover.document(bytes.fromhex(challenge["nonce"]))
        token = (await asyncio.to_thread(self.token_file.read_text)).strip()
        async with session.post(
            f"{base}/meters/v1/register",
            json={"evidence": document.to_api(), "journalId": self.journal_id},
            headers={"Authorization": f"Bearer {token}"}, timeout=_TIMEOUT, ssl=tls,
        ) as r:
            answer = await r.json(content_type=None)
            if r.status != 200:
                raise RegistrationRefused(r.status, answer)
        self.registered.set()
        return float(answer.get("renewAfterSeconds", 60))

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    wait = await self.register_once(session)
                except (aiohttp.ClientError, TimeoutError, EvidenceUnavailable, KeyError,
                        ValueError, OSError, RegistrationRefused) as exc:
                    log.warning("meter registration failed; retrying",
                                extra={"error": str(exc)[:300]})
                    wait = self.retry_seconds
                await asyncio.sleep(wait)


class RegistrationRefused(Exception):
    def __init__(self, status: int, body: object) -> None:
        error = body.get("error") if isinstance(body, dict) else None
        reason = error.get("reason") if isinstance(error, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        super().__init__(f"operator answered {status} {reason}: {message}")
        self.status = status
        self.reason = reason
