"""The firmware ID (FWID) an NVIDIA GPU's leaf certificate vouches for, per architecture.

Hopper writes it in the TCG DICE TcbInfo extension (2.23.133.5.4.1) and NVIDIA's verifiers take
that extension's last 48 bytes. Blackwell writes a full DICE TcbInfo in 2.23.133.5.4.1.1 (vendor,
model, version, svn, layer, index, then [6] the list of FWIDs, then flags...), whose last bytes
are not a digest; NVIDIA's verifiers take the first FWID of the list. We pick the form by the
extension the NVIDIA-signed certificate carries, so the unsigned architecture a node declares
cannot change which bytes are compared.
"""

from __future__ import annotations

from cryptography import x509

from cocoon.attestation.verdict import Rejected

OID_TCB_INFO = x509.ObjectIdentifier("2.23.133.5.4.1")  # Hopper
OID_TCB_INFO_BLACKWELL = x509.ObjectIdentifier("2.23.133.5.4.1.1")
FWID_SIZE = 48
SEQUENCE, OID, OCTET_STRING, FWIDS = 0x30, 0x06, 0x04, 0xA6


def _tlv(data: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, start of value, end of value) of the DER element at `offset`; ValueError if cut."""
    if offset + 2 > len(data):
        raise ValueError("truncated DER header")
    tag, first = data[offset], data[offset + 1]
    start = offset + 2
    if first & 0x80:
        count = first & 0x7F
        if not 1 <= count <= 2 or start + count > len(data):
            raise ValueError("unsupported DER length")
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    else:
        length = first
    if start + length > len(data):
        raise ValueError("DER value runs past its container")
    return tag, start, start + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    items, offset = [], start
    while offset < end:
        item = _tlv(data[:end], offset)
        items.append(item)
        offset = item[2]
    return items


def tcb_info_fwids(raw: bytes) -> list[bytes]:
    """The digests of a DER DICE TcbInfo's `fwids` ([6] SEQUENCE OF {hashAlg OID, digest})."""
    tag, start, end = _tlv(raw, 0)
    if tag != SEQUENCE or end != len(raw):
        raise ValueError("TcbInfo is not exactly one SEQUENCE")
    fwids = [c for c in _children(raw, start, end) if c[0] == FWIDS]
    if len(fwids) != 1:
        raise ValueError("TcbInfo has no (or several) fwids fields")
    digests = []
    for tag, s, e in _children(raw, fwids[0][1], fwids[0][2]):
        parts = _children(raw, s, e) if tag == SEQUENCE else []
        if [p[0] for p in parts] != [OID, OCTET_STRING]:
            raise ValueError("an FWID is not {hashAlg, digest}")
        digests.append(raw[parts[1][1] : parts[1][2]])
    if not digests:
        raise ValueError("the fwids list is empty")
    return digests


def _extension(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> bytes | None:
    try:
        value = cert.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None
    return value.value if isinstance(value, x509.UnrecognizedExtension) else None


def leaf_fwid(cert: x509.Certificate) -> bytes | None:
    """The FWID the GPU leaf certificate binds; None when it carries neither extension."""
    blackwell = _extension(cert, OID_TCB_INFO_BLACKWELL)
    if blackwell is not None:
        try:
            return tcb_info_fwids(blackwell)[0]
        except ValueError as exc:
            raise Rejected(
                "BadCertificate",
                f"the GPU leaf certificate's TcbInfo (2.23.133.5.4.1.1) is malformed: {exc}",
            ) from None
    hopper = _extension(cert, OID_TCB_INFO)
    return hopper[-FWID_SIZE:] if hopper is not None and len(hopper) >= FWID_SIZE else None
