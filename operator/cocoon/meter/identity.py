"""A meter instance's identity: keys generated in memory at start, bound into TEE evidence.

Nothing here touches the disk. The TLS key serves the meter's HTTP and gRPC ports; the receipt
key signs every receipt and usage report. Both are bound into evidence made for
`cocoon.attestation.endpoint.report_data(nonce, keys)`: for a caller's nonce on the attestation
route, and for a time-derived nonce in the RA-TLS certificate, which is re-issued before the
policy's maximum evidence age.

Python's `ssl` loads keys only from paths, so the PEM goes through an anonymous memory file
(`memfd_create`) that is closed as soon as OpenSSL has read it.
"""

from __future__ import annotations

import hashlib
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from cocoon import keys
from cocoon.attestation import endpoint
from cocoon.attestation.endpoint import EndpointEvidence, EndpointKeys
from cocoon.attestation.evidence import NodeEvidence

TLS_NAME = "cocoon-meter"
# report_data (64 bytes) -> evidence bound to it; the agent's socket or configfs-tsm in a pod VM
BoundEvidenceSource = Callable[[bytes], NodeEvidence]


@dataclass(frozen=True)
class Placement:
    """What the meter says about where it runs: metadata for humans, never proof."""

    pool: str = ""
    pod: str = ""
    node: str = ""


@dataclass
class MeterIdentity:
    tls_key: ec.EllipticCurvePrivateKey
    receipt_key: Ed25519PrivateKey
    placement: Placement = field(default_factory=Placement)
    certificate: x509.Certificate | None = None

    @classmethod
    def generate(cls, placement: Placement | None = None) -> MeterIdentity:
        return cls(ec.generate_private_key(ec.SECP256R1()), keys.generate(),
                   placement or Placement())

    @property
    def keys(self) -> EndpointKeys:
        spki = self.tls_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return EndpointKeys(
            hashlib.sha256(spki).digest(), keys.public_bytes(self.receipt_key)
        )

    @property
    def receipt_public_hex(self) -> str:
        return keys.public_bytes(self.receipt_key).hex()

    def document(
        self, nonce: bytes, bound: NodeEvidence, *, now: datetime | None = None
    ) -> EndpointEvidence:
        """The endpoint evidence document for `nonce`, given evidence made for
        `endpoint.report_data(nonce, self.keys)`."""
        return endpoint.build(
            nonce, self.keys, bound, issued_at=now or datetime.now(UTC),
            pool=self.placement.pool, pod=self.placement.pod, node=self.placement.node,
        )

    def evidence(
        self, nonce: bytes, source: BoundEvidenceSource, *, now: datetime | None = None
    ) -> EndpointEvidence:
        """Fresh evidence for `nonce` (a caller's, the operator's, or a certificate's)."""
        return self.document(nonce, source(endpoint.report_data(nonce, self.keys)), now=now)

    def certificate_for(
        self, document: EndpointEvidence, *, lifetime: timedelta = timedelta(hours=24)
    ) -> x509.Certificate:
        """A self-signed certificate for the TLS key carrying `document`, which must have been
        made for `certificate_nonce(issued_at)`; it becomes the current certificate."""
        issued = document.issued_at
        name = x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, "cocoon meter"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.placement.pool or "cocoon"),
        ])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.tls_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(issued - timedelta(minutes=5))
            .not_valid_after(issued + lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                # a fixed name for clients that insist on one (gRPC); trust is the pinned key
                x509.SubjectAlternativeName([x509.DNSName(TLS_NAME)]), critical=False
            )
            .add_extension(endpoint.certificate_extension(document), critical=False)
        )
        self.certificate = builder.sign(self.tls_key, hashes.SHA256())
        return self.certificate

    def issue_certificate(
        self, source: BoundEvidenceSource, *, now: datetime | None = None,
        lifetime: timedelta = timedelta(hours=24),
    ) -> x509.Certificate:
        """A self-signed certificate for the TLS key that carries evidence binding it."""
        issued = (now or datetime.now(UTC)).replace(microsecond=0)
        nonce = endpoint.certificate_nonce(int(issued.timestamp()))
        return self.certificate_for(self.evidence(nonce, source, now=issued), lifetime=lifetime)

    def certificate_pem(self) -> bytes:
        if self.certificate is None:
            raise RuntimeError("issue_certificate first")
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def tls_key_pem(self) -> bytes:
        return self.tls_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def load_into(self, context: ssl.SSLContext) -> None:
        """(Re)load the current certificate and key; new handshakes use them."""
        fd = os.memfd_create("cocoon-meter-tls", os.MFD_CLOEXEC)
        try:
            os.write(fd, self.tls_key_pem() + self.certificate_pem())
            context.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)

    def server_context(self) -> ssl.SSLContext:
        """TLS 1.3 only, no client certificates (callers authenticate with credentials)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.set_alpn_protocols(["http/1.1"])
        self.load_into(context)
        return context

