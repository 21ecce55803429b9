"""Turn evidence files as vendors ship them (hex text, raw bytes, PEM, DER, NVIDIA JSON) into bytes.

Every decoder raises `Rejected` with reason `MalformedEvidence` rather than a library exception,
so garbage input becomes a refusal with a message, never a traceback.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import warnings
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning

from cocoon.attestation.verdict import Rejected

MALFORMED = "MalformedEvidence"
SERIAL_WARNING = "Parsed a serial number which wasn't positive"
_HEX_TEXT = re.compile(rb"^(0x)?[0-9a-fA-F\s]+$")


def decode_blob(data: bytes, what: str = "evidence") -> bytes:
    """Hex text (as NVIDIA's and virtee's samples are saved) or raw binary, auto-detected."""
    stripped = data.strip()
    if stripped and _HEX_TEXT.match(stripped):
        text = re.sub(rb"\s+", b"", stripped.removeprefix(b"0x"))
        if len(text) % 2 == 0:
            return bytes.fromhex(text.decode())
    if not data:
        raise Rejected(MALFORMED, f"{what} is empty: pass the file the TEE produced")
    return data


def parse_hex(text: str, what: str, length: int | None = None) -> bytes:
    """A hex string from a policy or the command line, with an optional exact byte length."""
    try:
        value = bytes.fromhex(text.strip().removeprefix("0x"))
    except ValueError:
        raise Rejected(MALFORMED, f"{what} is not hexadecimal: {text[:40]!r}") from None
    if length is not None and len(value) != length:
        raise Rejected(MALFORMED, f"{what} must be {length} bytes, got {len(value)}")
    return value


def load_certificates(data: bytes, what: str = "certificate") -> list[x509.Certificate]:
    """One or more certificates: PEM (any number, in order), DER, or DER as hex text."""
    try:
        with warnings.catch_warnings():
            # AMD issues every VCEK/VLEK with serial number 0; tests notice when this turns fatal.
            warnings.filterwarnings("ignore", SERIAL_WARNING, CryptographyDeprecationWarning)
            if b"-----BEGIN" in data:
                certs = x509.load_pem_x509_certificates(data)
            else:
                certs = [x509.load_der_x509_certificate(decode_blob(data, what))]
    except ValueError as exc:
        raise Rejected(MALFORMED, f"{what} is not a PEM or DER X.509 certificate: {exc}") from None
    if not certs:
        raise Rejected(MALFORMED, f"{what} holds no certificate")
    return certs


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def pem(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(Encoding.PEM) for c in certs)


@dataclass(frozen=True)
class NvidiaJsonEntry:
    """One GPU from NVIDIA's JSON evidence list."""

    arch: str
    certificates: bytes
    evidence: bytes
    nonce: bytes | None


def parse_nvidia_json(data: bytes) -> list[NvidiaJsonEntry]:
    """`[{"arch", "certificate": base64(PEM chain), "evidence": base64(report), "nonce": hex}]`."""
    try:
        items = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Rejected(MALFORMED, f"GPU evidence is not JSON: {exc}") from None
    if isinstance(items, dict):
        items = items.get("evidence_list", [items])
    if not isinstance(items, list) or not items:
        raise Rejected(MALFORMED, "GPU evidence JSON must be a non-empty list of GPU entries")
    entries = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise Rejected(MALFORMED, f"GPU evidence entry {index} is not an object")
        try:
            certificates = base64.b64decode(str(item["certificate"]), validate=True)
            evidence = base64.b64decode(str(item["evidence"]), validate=True)
        except (KeyError, binascii.Error) as exc:
            raise Rejected(
                MALFORMED,
                f"GPU evidence entry {index} needs base64 'certificate' and 'evidence': {exc}",
            ) from None
        nonce_text = item.get("nonce")
        nonce = parse_hex(str(nonce_text), f"entry {index} nonce") if nonce_text else None
        arch = str(item.get("arch", "HOPPER"))
        entries.append(NvidiaJsonEntry(arch, certificates, evidence, nonce))
    return entries


def nvidia_json(entries: list[NvidiaJsonEntry]) -> bytes:
    """The inverse of `parse_nvidia_json`, for the agent and the simulated TEE."""
    return json.dumps(
        [
            {
                "arch": e.arch,
                "certificate": base64.b64encode(e.certificates).decode(),
                "evidence": base64.b64encode(e.evidence).decode(),
                "nonce": e.nonce.hex() if e.nonce is not None else None,
            }
            for e in entries
        ]
    ).encode()
