"""Endpoint evidence: TEE evidence that binds one meter instance's in-memory keys.

A meter generates a TLS key and a receipt-signing key at start and never writes them anywhere.
It proves they live inside an attested TEE by getting CPU and GPU evidence made for

    report_data = SHA-512(DOMAIN || nonce || keys_digest)
    keys_digest = SHA-256(KEYS_DOMAIN || SHA-256(TLS SubjectPublicKeyInfo DER) || receipt key)

(each GPU's SPDM nonce is the first 32 bytes, as for nodes). The domain tags keep this binding
apart from the node binding (`SHA-512(nonce || workload key)`), so node evidence can never be
passed off as a meter's or the other way round.

A caller appraises the document with the same pure verifiers the operator uses, against its own
policy, and pins the TLS key only when the connection it is talking over presents that key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import Field

from cocoon.api.common import ApiModel
from cocoon.attestation import appraisal, cmw
from cocoon.attestation.evidence import NodeEvidence
from cocoon.attestation.policy import Policy
from cocoon.attestation.verdict import Failure, Rejected, Verdict, combine

FORMAT = "cocoon.dev/endpoint-evidence/v1"
DOMAIN = b"cocoon.dev/endpoint-evidence/v1\n"
KEYS_DOMAIN = b"cocoon.dev/endpoint-keys/v1\n"
NONCE_BYTES = 32
# RA-TLS certificates carry the endpoint evidence document in the standard CMW extension
# (`cmw`), as a JSON record of this media type.
MEDIA_TYPE = "application/vnd.cocoon.endpoint-evidence+json"
# RA-TLS certificates carry no caller nonce; theirs is derived from the issue time instead.
CERT_NONCE_DOMAIN = b"cocoon.dev/ratls-certificate/v1\n"


def spki_sha256(certificate: x509.Certificate | bytes) -> bytes:
    """SHA-256 of the certificate's SubjectPublicKeyInfo (DER): what a TLS peer is pinned by."""
    cert = (
        certificate
        if isinstance(certificate, x509.Certificate)
        else x509.load_der_x509_certificate(certificate)
    )
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()


@dataclass(frozen=True)
class EndpointKeys:
    """The public halves of a meter instance's keys."""

    tls_spki_sha256: bytes
    receipt_public_key: bytes

    def __post_init__(self) -> None:
        if len(self.tls_spki_sha256) != 32 or len(self.receipt_public_key) != 32:
            raise ValueError("endpoint keys are a 32-byte SPKI digest and a 32-byte Ed25519 key")

    def digest(self) -> bytes:
        return hashlib.sha256(
            KEYS_DOMAIN + self.tls_spki_sha256 + self.receipt_public_key
        ).digest()


def report_data(nonce: bytes, keys: EndpointKeys) -> bytes:
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"nonce must be {NONCE_BYTES} bytes, got {len(nonce)}")
    return hashlib.sha512(DOMAIN + nonce + keys.digest()).digest()


def certificate_nonce(issued_at: int) -> bytes:
    """The nonce of evidence embedded in an RA-TLS certificate issued at `issued_at`."""
    return hashlib.sha256(CERT_NONCE_DOMAIN + issued_at.to_bytes(8, "big")).digest()


class EndpointEvidence(ApiModel):
    """What `GET /.well-known/cocoon/attestation?nonce=` returns, and the RA-TLS extension holds.

    `evidence` is the node-evidence wire form (CPU report with its certificates or collateral,
    GPU reports with their chains): everything needed to verify offline. `pool`, `pod` and `node`
    are what the meter says of itself: metadata, not proof.
    """

    format: str = Field(default=FORMAT, pattern=f"^{FORMAT}$")
    nonce: str = Field(pattern=r"^[0-9a-f]{64}$", description="The caller's nonce, hex.")
    tls_spki_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    receipt_public_key: str = Field(pattern=r"^[0-9a-f]{64}$", description="Ed25519, hex.")
    issued_at: datetime
    evidence: dict[str, object]
    pool: str = ""
    pod: str = ""
    node: str = ""

    @property
    def keys(self) -> EndpointKeys:
        return EndpointKeys(bytes.fromhex(self.tls_spki_sha256),
                            bytes.fromhex(self.receipt_public_key))


def build(
    nonce: bytes, keys: EndpointKeys, evidence: NodeEvidence, *, issued_at: datetime,
    pool: str = "", pod: str = "", node: str = "",
) -> EndpointEvidence:
    return EndpointEvidence(
        nonce=nonce.hex(), tls_spki_sha256=keys.tls_spki_sha256.hex(),
        receipt_public_key=keys.receipt_public_key.hex(),
        issued_at=issued_at.astimezone(UTC).replace(microsecond=0),
        evidence=evidence.to_dict(), pool=pool, pod=pod, node=node,
    )


def appraise(
    document: EndpointEvidence,
    policy: Policy,
    *,
    now: int,
    nonce: bytes,
    tls_spki_sha256: bytes | None,
) -> Verdict:
    """Verified only if the evidence is authentic, acceptable to `policy`, made for `nonce`
    (the caller's, never the document's say-so), and binds the TLS key the caller sees."""
    failures: list[Failure] = []
    if document.nonce != nonce.hex():
        failures.append(Failure(
            "ReplayedProof",
            "the evidence answers another nonce (replayed or stale proof): ask again with a "
            "fresh nonce",
        ))
    if tls_spki_sha256 is not None and document.tls_spki_sha256 != tls_spki_sha256.hex():
        failures.append(Failure(
            "KeyNotBound",
            "the TLS key of this connection is not the key the evidence binds: something "
            "between you and the attested meter terminates TLS (man in the middle)",
        ))
    age = now - int(document.issued_at.timestamp())
    if not -60 <= age <= policy.max_evidence_age:
        failures.append(Failure(
            "EvidenceTooOld",
            f"the evidence was issued {age}s ago; the policy accepts {policy.max_evidence_age}s",
        ))
    try:
        evidence = NodeEvidence.from_dict(document.evidence)
    except Rejected as exc:
        return combine([], now=now, lifetime=0, node_failures=[*failures, exc.failure])
    return appraisal.appraise_evidence(
        evidence, policy, now=now, report_data=report_data(nonce, document.keys),
        failures=failures,
    )

def evidence_in_certificate(certificate: x509.Certificate) -> EndpointEvidence | None:
    """The endpoint evidence an RA-TLS certificate carries, if any; ValueError when its CMW
    record is ours but malformed."""
    try:
        ext = certificate.extensions.get_extension_for_oid(cmw.EXTENSION)
    except x509.ExtensionNotFound:
        return None
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        return None
    try:
        document = cmw.decode(value.value, MEDIA_TYPE)
    except cmw.NotOurs:
        return None
    return EndpointEvidence.model_validate_json(document)


def certificate_extension(document: EndpointEvidence) -> x509.UnrecognizedExtension:
    """The CMW extension that carries `document` in an RA-TLS certificate."""
    return x509.UnrecognizedExtension(
        cmw.EXTENSION, cmw.encode(MEDIA_TYPE, document.model_dump_json(by_alias=True).encode()))
