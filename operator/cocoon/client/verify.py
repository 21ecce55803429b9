"""Endpoint verification, free of I/O: appraise evidence against the caller's policy and pin.

A connection is trusted only when the TLS key it presents is pinned, and a key is pinned only
when evidence that binds it was verified against the client's policy: either evidence for the
client's own fresh nonce, fetched over that very connection (`EvidenceExchange`), or the RA-TLS
certificate's embedded evidence while it is younger than the policy's maximum age. The
operator's token plays no part.
"""

from __future__ import annotations

import os
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import h11
from cryptography import x509
from pydantic import ValidationError

from cocoon.attestation import endpoint
from cocoon.attestation.endpoint import EndpointEvidence
from cocoon.attestation.policy import Policy
from cocoon.attestation.verdict import Verdict
from cocoon.client.errors import EvidenceUnavailable, refusal

ROUTE = "/.well-known/cocoon/attestation"
MAX_EVIDENCE_BYTES = 4 << 20


@dataclass(frozen=True)
class PinnedEndpoint:
    """A meter instance whose keys were verified; `pool`, `pod`, `node` are its own say-so."""

    origin: str
    tls_spki_sha256: bytes
    receipt_public_key: bytes
    expires_at: int
    via: str  # "nonce" or "certificate"
    pool: str = ""
    pod: str = ""
    node: str = ""
    claims: dict[str, dict[str, object]] = field(default_factory=dict, compare=False)


def client_context() -> ssl.SSLContext:
    """TLS 1.3 without CA verification: trust comes from the pinned, attested key instead."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context


class Verifier:
    """The client policy, the pins it produced, and the clock; shared by sync and async use."""

    def __init__(self, policy: Policy, *, certificate_evidence: bool = True,
                 clock: Callable[[], float] = time.time) -> None:
        self.policy = policy
        self.certificate_evidence = certificate_evidence
        self.clock = clock
        self.ssl_context = client_context()
        self._pins: dict[tuple[str, bytes], PinnedEndpoint] = {}
        self._lock = threading.Lock()
        self.refusals: Counter[str] = Counter()  # by reason: endpoints and receipts refused

    def refused(self, reason: str) -> None:
        with self._lock:
            self.refusals[reason] += 1

    def now(self) -> int:
        return int(self.clock())

    def pinned(self, origin: str, certificate_der: bytes) -> PinnedEndpoint | None:
        """The still-valid pin for the key this certificate presents, if any."""
        key = (origin, endpoint.spki_sha256(certificate_der))
        with self._lock:
            pin = self._pins.get(key)
            if pin is not None and pin.expires_at <= self.now():
                del self._pins[key]
                return None
        return pin

    def pins(self) -> list[PinnedEndpoint]:
        with self._lock:
            return list(self._pins.values())

    def from_certificate(self, origin: str, certificate_der: bytes) -> PinnedEndpoint | None:
        """Pin from the RA-TLS certificate's evidence when it verifies; None means: ask with a
        nonce (a stale or failing certificate is never a refusal on its own)."""
        if not self.certificate_evidence:
            return None
        try:
            document = endpoint.evidence_in_certificate(
                x509.load_der_x509_certificate(certificate_der))
        except ValueError:  # malformed extension or certificate: ask with a nonce instead
            return None
        if document is None:
            return None
        issued = int(document.issued_at.timestamp())
        verdict = self._appraise(document, endpoint.certificate_nonce(issued), certificate_der)
        return self._pin(origin, document, verdict, "certificate") if verdict.verified else None

    def from_document(self, origin: str, certificate_der: bytes, document: EndpointEvidence,
                      nonce: bytes) -> PinnedEndpoint:
        """Pin from evidence answering `nonce`, or raise the precise refusal."""
        verdict = self._appraise(document, nonce, certificate_der)
        if not verdict.verified:
            raise refusal(verdict, origin)
        return self._pin(origin, document, verdict, "nonce")

    def _appraise(self, document: EndpointEvidence, nonce: bytes, der: bytes) -> Verdict:
        return endpoint.appraise(document, self.policy, now=self.now(), nonce=nonce,
                                 tls_spki_sha256=endpoint.spki_sha256(der))

    def _pin(self, origin: str, document: EndpointEvidence, verdict: Verdict,
             via: str) -> PinnedEndpoint:
        keys = document.keys
        pin = PinnedEndpoint(
            origin, keys.tls_spki_sha256, keys.receipt_public_key, verdict.expires_at, via,
            document.pool, document.pod, document.node,
            {d.name: dict(d.claims) for d in verdict.devices},
        )
        with self._lock:
            self._pins[(origin, keys.tls_spki_sha256)] = pin
        return pin


class EvidenceExchange:
    """`GET /.well-known/cocoon/attestation?nonce=` as HTTP/1.1 bytes in and out (sans I/O), so
    the sync and async streams share it and the connection stays usable afterwards."""

    def __init__(self, host: str, nonce: bytes | None = None) -> None:
        self.nonce = nonce or os.urandom(endpoint.NONCE_BYTES)
        self._host = host
        self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=64 << 10)
        self._status = 0
        self._body = bytearray()
        self._done = False

    def request(self) -> bytes:
        target = f"{ROUTE}?nonce={self.nonce.hex()}"
        head = self._conn.send(h11.Request(method="GET", target=target, headers=[
            ("Host", self._host), ("Accept", "application/json"),
            ("User-Agent", "cocoon-client"),
        ]))
        return (head or b"") + (self._conn.send(h11.EndOfMessage()) or b"")

    def feed(self, data: bytes) -> bool:
        """Give it what the connection read (b"" at EOF); True once the response is complete."""
        self._conn.receive_data(data)
        while True:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise self._unavailable(f"bad HTTP response: {exc}") from None
            if event is h11.NEED_DATA:
                if not data:
                    raise self._unavailable("the connection closed before the evidence came")
                return False
            if isinstance(event, h11.Response):
                self._status = event.status_code
            elif isinstance(event, h11.Data):
                self._body += event.data
                if len(self._body) > MAX_EVIDENCE_BYTES:
                    raise self._unavailable(f"evidence larger than {MAX_EVIDENCE_BYTES} bytes")
            elif isinstance(event, h11.EndOfMessage):
                self._done = True
                return True
            elif isinstance(event, h11.ConnectionClosed):
                raise self._unavailable("the connection closed before the evidence came")

    @property
    def reusable(self) -> bool:
        """Whether the connection may carry the caller's request now (keep-alive)."""
        return self._done and self._conn.our_state is h11.DONE and (
            self._conn.their_state is h11.DONE)

    def document(self) -> EndpointEvidence:
        if self._status != 200:
            raise self._unavailable(
                f"the attestation route answered HTTP {self._status}: the endpoint is not an "
                "attested Cocoon meter, or it serves no evidence"
            )
        try:
            return EndpointEvidence.model_validate_json(bytes(self._body))
        except ValidationError as exc:
            raise self._unavailable(f"malformed endpoint evidence: {exc}") from None

    def _unavailable(self, message: str) -> EvidenceUnavailable:
        return EvidenceUnavailable("EvidenceUnavailable", message, endpoint=self._host)
