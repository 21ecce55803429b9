"""Certificate path validation to pinned anchors, at an explicit time, with an explicit CRL stance.

Our own small validator rather than `cryptography.x509.verification`: vendor chains break its
RFC 5280 profile (AMD's RSA-PSS certificates with serial number 0, NVIDIA's 9999 expiry, RIM
chains shipped with their root), while what we need is narrow: names and signatures link, each
certificate is valid at `at`, issuers are CAs, and the top is an anchor whose DER hash we pinned.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from cocoon.attestation.encoding import der
from cocoon.attestation.enums import Revocation, RootPurpose
from cocoon.attestation.verdict import Rejected

MAX_DEPTH = 8


@dataclass(frozen=True)
class Anchor:
    """A trusted root for one purpose; `simulated` marks the per-cluster test root."""

    name: str
    purpose: RootPurpose
    cert: x509.Certificate
    simulated: bool = False

    @property
    def sha256(self) -> str:
        return sha256_der(self.cert)


def sha256_der(cert: x509.Certificate) -> str:
    return hashlib.sha256(der(cert)).hexdigest()


@functools.lru_cache(maxsize=4096)
def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether `issuer`'s key signed `cert`. A fact about two fixed DER blobs (certificates hash
    and compare by DER), so it is memoised: a fleet's GPUs share their intermediates."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _describe(cert: x509.Certificate) -> str:
    return f"'{cert.subject.rfc4514_string()}' (sha256 {sha256_der(cert)[:16]}…)"


def build_path(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[Anchor],
    what: str,
) -> tuple[list[x509.Certificate], Anchor]:
    """Leaf first, anchor last; a self-signed look-alike of an anchor is refused by hash."""
    by_hash = {a.sha256: a for a in anchors}
    path = [leaf]
    current = leaf
    pool = [c for c in intermediates if c != leaf]
    for _ in range(MAX_DEPTH):
        anchor = by_hash.get(sha256_der(current))
        if anchor is not None:
            return path, anchor
        for candidate in anchors:
            if _issued_by(current, candidate.cert):
                return [*path, candidate.cert], candidate
        issuer = next((c for c in pool if _issued_by(current, c)), None)
        if issuer is None:
            named = [c for c in pool if c.subject == current.issuer]
            if any(c.subject == c.issuer for c in named):
                raise Rejected(
                    "UntrustedRoot",
                    f"{what} chains to {_describe(named[0])}, which is not a pinned root for "
                    "this purpose (a look-alike or unlisted root); add it to the policy's "
                    "trustedRoots only if you really trust it",
                )
            if named:
                raise Rejected(
                    "BadCertificateSignature",
                    f"{what}: {_describe(current)} is not signed by its issuer "
                    f"{_describe(named[0])}; the certificate chain was tampered with or mixed up",
                )
            if current.subject == current.issuer:
                twin = any(a.cert.subject == current.subject for a in anchors)
                kind = (
                    "a look-alike of a pinned root (same name, other key)"
                    if twin
                    else ("not a pinned root for this purpose")
                )
                raise Rejected(
                    "UntrustedRoot", f"{what} ends at self-signed {_describe(current)}, {kind}"
                )
            raise Rejected(
                "IncompleteCertificateChain",
                f"{what}: no certificate for issuer '{current.issuer.rfc4514_string()}' of "
                f"{_describe(current)} and no trusted root signed it; supply the full chain",
            )
        path.append(issuer)
        pool.remove(issuer)
        current = issuer
    raise Rejected("IncompleteCertificateChain", f"{what}: chain longer than {MAX_DEPTH}")


def check_validity(path: Sequence[x509.Certificate], at: datetime, what: str) -> None:
    """Every certificate valid at `at`, and every issuer a CA when it says so."""
    for cert in path:
        if at < cert.not_valid_before_utc:
            raise Rejected(
                "CertificateNotYetValid",
                f"{what}: {_describe(cert)} is valid only from "
                f"{cert.not_valid_before_utc.isoformat()}; check the verification time",
            )
        if at > cert.not_valid_after_utc:
            raise Rejected(
                "CertificateExpired",
                f"{what}: {_describe(cert)} expired {cert.not_valid_after_utc.isoformat()}; "
                "fetch current certificates from the vendor",
            )
    for issuer in path[1:]:
        try:
            constraints = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            continue
        if not constraints.ca:
            raise Rejected(
                "BadCertificateChain",
                f"{what}: {_describe(issuer)} signed another certificate but is not a CA",
            )


def verify_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[Anchor],
    at: datetime,
    what: str,
) -> tuple[list[x509.Certificate], Anchor]:
    path, anchor = build_path(leaf, intermediates, anchors, what)
    check_validity(path, at, what)
    return path, anchor


def check_revocation(
    path: Sequence[x509.Certificate],
    crls: Sequence[x509.CertificateRevocationList],
    at: datetime,
    stance: Revocation,
    what: str,
) -> str:
    """'good' when a fresh CRL from each issuer clears its subject, else 'unknown' if accepted."""
    unknown = []
    for cert, issuer in itertools.pairwise(path):
        fresh = [
            crl
            for crl in crls
            if crl.issuer == issuer.subject
            and _crl_signed_by(crl, issuer)
            and crl.last_update_utc <= at
            and (crl.next_update_utc is None or at < crl.next_update_utc)
        ]
        if any(crl.get_revoked_certificate_by_serial_number(cert.serial_number) for crl in fresh):
            raise Rejected(
                "CertificateRevoked",
                f"{what}: {_describe(cert)} is revoked by its issuer's CRL; the device or "
                "signer must not be trusted",
            )
        if not fresh:
            unknown.append(cert)
    if unknown and stance is Revocation.REQUIRE_FRESH_CRL:
        raise Rejected(
            "RevocationUnknown",
            f"{what}: no fresh CRL signed by the issuer of {_describe(unknown[0])}; supply "
            "current CRLs or set the policy's revocation to AcceptUnknown",
        )
    return "unknown" if unknown else "good"


def _crl_signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    key = issuer.public_key()
    try:
        return crl.is_signature_valid(key)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
