"""NVIDIA GPU evidence (Hopper, Blackwell): an SPDM 1.1 GET_MEASUREMENTS request and its signed
response.

Parsed by structure (lengths inside the message), so trailing zero padding some captures carry is
tolerated while any other trailing byte is refused. Authenticity: the device chain ends at a
pinned NVIDIA Device Identity CA, the leaf's FWID (read per architecture, see `dice`) matches the
firmware's, and the P-384 signature covers request and response.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

from cocoon.attestation import dice
from cocoon.attestation.chain import check_revocation, verify_chain
from cocoon.attestation.encoding import MALFORMED
from cocoon.attestation.enums import GpuCcMode, Revocation, RootPurpose
from cocoon.attestation.roots import TrustStore
from cocoon.attestation.verdict import Rejected

SPDM_VERSION = 0x11
GET_MEASUREMENTS = 0xE0
MEASUREMENTS = 0x60
REQUEST_SIZE = 37
NONCE_SIZE = 32
SIGNATURE_SIZE = 96
COMPONENT = 48


class Opaque:
    """NVIDIA opaque-data TLV types we read."""

    DRIVER_VERSION = 3
    VBIOS_VERSION = 6
    CHIP_SKU = 15
    PROJECT = 17
    PROJECT_SKU = 18
    FWID = 20
    OPAQUE_DATA_VERSION = 34
    FEATURE_FLAG = 36


# FEATURE_FLAG values, as NVIDIA's SDKs read them (a little-endian integer of up to 8 bytes).
CC_MODES = {
    0: GpuCcMode.SINGLE_GPU_PASSTHROUGH,
    1: GpuCcMode.MULTI_GPU_PASSTHROUGH,
    2: GpuCcMode.PROTECTED_PCIE,
}
UNREPORTED_MODE = "Unreported"


@dataclass(frozen=True)
class SpdmEvidence:
    """One GPU's parsed GET_MEASUREMENTS exchange."""

    request: bytes
    response: bytes
    nonce: bytes
    measurements: Mapping[int, bytes]
    opaque: Mapping[int, bytes]
    signature: bytes

    @property
    def signed(self) -> bytes:
        return self.request + self.response

    @property
    def driver_version(self) -> str:
        return _text(self.opaque.get(Opaque.DRIVER_VERSION, b""))

    @property
    def vbios_version(self) -> str:
        return format_vbios_version(self.opaque.get(Opaque.VBIOS_VERSION, b""))

    @property
    def fwid(self) -> bytes | None:
        return self.opaque.get(Opaque.FWID)

    @property
    def cc_mode(self) -> GpuCcMode | None:
        """The signed CC mode; None for firmware that predates the flag (e.g. H100 on 535/550)."""
        raw = self.opaque.get(Opaque.FEATURE_FLAG)
        if raw is None:
            return None
        if not 1 <= len(raw) <= 8 or int.from_bytes(raw, "little") not in CC_MODES:
            raise Rejected(
                MALFORMED,
                f"the GPU evidence carries an unknown CC feature flag {raw.hex()}: update Cocoon "
                "if NVIDIA added a mode",
            )
        return CC_MODES[int.from_bytes(raw, "little")]


def _text(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("ascii", "replace")


def format_vbios_version(raw: bytes) -> str:
    """`00 9f 00 96 01 ..` → `96.00.9f.00.01`, the form RIMs and nvidia-smi use."""
    if len(raw) < 5:
        return ""
    major = int.from_bytes(raw[:4], "little")
    head = f"{major:08x}"
    return ".".join([head[0:2], head[2:4], head[4:6], head[6:8], f"{raw[4]:02x}"])


def _need(data: bytes, end: int, what: str) -> None:
    if len(data) < end:
        raise Rejected(
            MALFORMED,
            f"GPU evidence truncated in {what}: need {end} bytes, have {len(data)}; pass the "
            "whole SPDM request and response",
        )


def parse(data: bytes) -> SpdmEvidence:
    """Request (37 bytes) then MEASUREMENTS response, then the signature, then only zeros."""
    _need(data, REQUEST_SIZE + 8, "the header")
    request = data[:REQUEST_SIZE]
    if request[0] != SPDM_VERSION or request[1] != GET_MEASUREMENTS:
        raise Rejected(
            MALFORMED,
            f"not an SPDM 1.1 GET_MEASUREMENTS request (starts {request[:2].hex()}, want 11e0)",
        )
    if not request[2] & 0x01:
        raise Rejected(MALFORMED, "the GET_MEASUREMENTS request did not ask for a signature")
    nonce = request[4 : 4 + NONCE_SIZE]
    body = data[REQUEST_SIZE:]
    if body[0] != SPDM_VERSION or body[1] != MEASUREMENTS:
        raise Rejected(
            MALFORMED, f"not an SPDM MEASUREMENTS response (starts {body[:2].hex()}, want 1160)"
        )
    count = body[4]
    record_len = int.from_bytes(body[5:8], "little")
    offset = 8
    _need(body, offset + record_len, "the measurement record")
    measurements = _parse_blocks(body[offset : offset + record_len], count)
    offset += record_len
    _need(body, offset + NONCE_SIZE + 2, "the responder nonce")
    offset += NONCE_SIZE
    opaque_len = int.from_bytes(body[offset : offset + 2], "little")
    offset += 2
    _need(body, offset + opaque_len + SIGNATURE_SIZE, "the opaque data and signature")
    opaque = _parse_opaque(body[offset : offset + opaque_len])
    offset += opaque_len
    signature = body[offset : offset + SIGNATURE_SIZE]
    trailing = body[offset + SIGNATURE_SIZE :]
    if trailing.strip(b"\x00"):
        raise Rejected(
            MALFORMED,
            f"{len(trailing)} unexpected bytes after the GPU evidence signature",
        )
    evidence = SpdmEvidence(request, body[:offset], nonce, measurements, opaque, signature)
    _ = evidence.cc_mode  # an unknown mode is malformed evidence, refused at parse time
    return evidence


def _parse_blocks(record: bytes, count: int) -> dict[int, bytes]:
    """DMTF measurement blocks: index, spec, size; then type, value size, value."""
    blocks: dict[int, bytes] = {}
    offset = 0
    for _ in range(count):
        _need(record, offset + 4, "a measurement block header")
        index, spec, size = struct.unpack_from("<BBH", record, offset)
        _need(record, offset + 4 + size, f"measurement block {index}")
        if spec != 0x01 or size < 3:
            raise Rejected(MALFORMED, f"measurement block {index} is not a DMTF measurement")
        value_size = int.from_bytes(record[offset + 5 : offset + 7], "little")
        if value_size != size - 3:
            raise Rejected(MALFORMED, f"measurement block {index} has inconsistent sizes")
        if index in blocks:
            raise Rejected(MALFORMED, f"measurement block {index} appears twice")
        blocks[index] = record[offset + 7 : offset + 4 + size]
        offset += 4 + size
    if offset != len(record):
        raise Rejected(MALFORMED, "the measurement record length disagrees with its blocks")
    return blocks


def _parse_opaque(raw: bytes) -> dict[int, bytes]:
    values: dict[int, bytes] = {}
    offset = 0
    while offset < len(raw):
        _need(raw, offset + 4, "an opaque-data entry")
        kind, size = struct.unpack_from("<HH", raw, offset)
        _need(raw, offset + 4 + size, f"opaque-data entry {kind}")
        values[kind] = raw[offset + 4 : offset + 4 + size]
        offset += 4 + size
    return values


def device_key(cert: x509.Certificate) -> str:
    """SHA-256 of the attestation key (SPKI DER): unique per physical GPU and firmware."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def _subject(cert: x509.Certificate | None, oid: x509.ObjectIdentifier) -> str:
    if cert is None:
        return ""
    values = cert.subject.get_attributes_for_oid(oid)
    return str(values[0].value) if values else ""


def device_serial(chain: Sequence[x509.Certificate]) -> str:
    """The device ID NVIDIA writes as the subject serialNumber of the per-device identity
    certificate (the one the leaf chains to, e.g. `GH100 A01 GSP BROM`); "" when absent."""
    return _subject(chain[1] if len(chain) > 1 else None, NameOID.SERIAL_NUMBER).upper()


def hardware_claims(chain: Sequence[x509.Certificate]) -> dict[str, str]:
    """NVIDIA's `hwmodel` (the device certificate's CN) and `ueid` (the leaf's certificate serial
    number in decimal), named as NVIDIA's verifier names them so results can be compared."""
    model = _subject(chain[1] if len(chain) > 1 else None, NameOID.COMMON_NAME)
    return {"hwModel": model, "ueid": str(chain[0].serial_number)}


@dataclass(frozen=True)
class AuthenticGpu:
    """GPU evidence whose signature, chain and FWID binding hold."""

    spdm: SpdmEvidence
    leaf: x509.Certificate
    root: str
    simulated: bool
    revocation: str
    serial: str = ""
    hardware: Mapping[str, str] = field(default_factory=dict)

    @property
    def identities(self) -> tuple[str, ...]:
        """What makes this GPU a distinct device: its attestation key and its device ID."""
        key = f"attestation key {device_key(self.leaf)[:16]}"
        return (key, f"device ID {self.serial}") if self.serial else (key,)

    def claims(self) -> dict[str, object]:
        s = self.spdm
        return {
            "driverVersion": s.driver_version,
            "vbiosVersion": s.vbios_version,
            "chipSku": _text(s.opaque.get(Opaque.CHIP_SKU, b"")),
            "project": _text(s.opaque.get(Opaque.PROJECT, b"")),
            "projectSku": _text(s.opaque.get(Opaque.PROJECT_SKU, b"")),
            "nonce": s.nonce.hex(),
            "fwidBound": s.fwid is not None,
            "ccMode": str(s.cc_mode) if s.cc_mode is not None else UNREPORTED_MODE,
            "measurementCount": len(s.measurements),
            "deviceKey": device_key(self.leaf),
            "deviceId": self.serial,
            **self.hardware,
            "root": self.root,
            "simulated": self.simulated,
            "revocation": self.revocation,
        }


def verify(
    data: bytes,
    certificates: Sequence[x509.Certificate],
    trust: TrustStore,
    at: datetime,
    *,
    crls: Sequence[x509.CertificateRevocationList] = (),
    revocation: Revocation = Revocation.ACCEPT_UNKNOWN,
) -> AuthenticGpu:
    """Authenticate one GPU's evidence against its certificate chain (leaf first)."""
    spdm = parse(data)
    if not certificates:
        raise Rejected("IncompleteCertificateChain", "no GPU certificate chain was given")
    leaf = certificates[0]
    path, anchor = verify_chain(
        leaf,
        certificates[1:],
        trust.for_purpose(RootPurpose.NVIDIA_DEVICE_IDENTITY),
        at,
        "GPU device certificate",
    )
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise Rejected("BadCertificate", "the GPU attestation key must be ECDSA P-384")
    r = int.from_bytes(spdm.signature[:COMPONENT], "big")
    s = int.from_bytes(spdm.signature[COMPONENT:], "big")
    try:
        key.verify(encode_dss_signature(r, s), spdm.signed, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        raise Rejected(
            "BadSignature",
            "the GPU evidence signature does not verify with the device's attestation key: "
            "the evidence was altered or the chain belongs to another GPU",
        ) from None
    if spdm.fwid is not None and dice.leaf_fwid(leaf) != spdm.fwid:
        raise Rejected(
            "FwidMismatch",
            "the firmware FWID in the evidence differs from the one in the GPU's leaf "
            "certificate: the certificate does not belong to this firmware",
        )
    status = check_revocation(path, crls, at, revocation, "GPU device certificate")
    return AuthenticGpu(
        spdm,
        leaf,
        anchor.name,
        anchor.simulated,
        status,
        device_serial(path),
        hardware_claims(path),
    )
