"""The RATS Conceptual Message Wrapper (CMW, RFC 9999) as an X.509 extension, JSON form only.

An RA-TLS certificate carries its evidence in the standard `id-pe-cmw` extension
(1.3.6.1.5.5.7.1.35), whose value is `CMW ::= CHOICE { json UTF8String, cbor OCTET STRING }`.
We write and read the `json` choice: a JSON record `[media-type, base64url(value), indicator]`.
A registered OID with small arcs is what every X.509 parser accepts (Go's refused the 128-bit
arc of the `2.25.<UUID>` OID used before, so no Go client, the kubelet's prober included, could
even open a TLS connection to a meter).
"""

from __future__ import annotations

import base64
import binascii
import json
import re

from cryptography import x509

from cocoon.attestation.der import der_tlv

EXTENSION = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.35")
EVIDENCE = 4  # the CMW indicator bit for Evidence (RFC 9999's cm-type bitmap)
_UTF8_STRING = 0x0C
MAX_RECORD = 1 << 20  # an RA-TLS certificate's evidence is tens of kB; refuse anything absurd
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


class NotOurs(Exception):
    """A well-formed CMW whose media type is another application's."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def encode(media_type: str, value: bytes, indicator: int = EVIDENCE) -> bytes:
    """The extension's value: DER of the `json` choice holding the record."""
    record = json.dumps([media_type, _b64url(value), indicator], separators=(",", ":")).encode()
    return der_tlv(_UTF8_STRING, record)


def _der_utf8(der: bytes) -> bytes:
    """The content of a single DER UTF8String spanning all of `der` (strict: minimal length)."""
    if len(der) < 2 or der[0] != _UTF8_STRING:
        raise ValueError("CMW extension: expected the JSON choice (a UTF8String); "
                         "the CBOR choice is not read by this client")
    first = der[1]
    if first < 0x80:
        length, start = first, 2
    else:
        size = first & 0x7F
        if size == 0 or size > 4 or len(der) < 2 + size:
            raise ValueError("CMW extension: bad DER length")
        length, start = int.from_bytes(der[2:2 + size], "big"), 2 + size
        if length < 0x80 or der[2] == 0:
            raise ValueError("CMW extension: DER length is not minimal")
    if length > MAX_RECORD or start + length != len(der):
        raise ValueError("CMW extension: length does not match the extension's value")
    return der[start:]


def decode(der: bytes, media_type: str) -> bytes:
    """The wrapped value when the record is `media_type`'s; raise `NotOurs` for another media
    type, ValueError for anything malformed."""
    try:
        record = json.loads(_der_utf8(der).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"CMW extension: the record is not JSON ({exc})") from None
    if not (isinstance(record, list) and len(record) in (2, 3)
            and all(isinstance(item, str) for item in record[:2])):
        raise ValueError("CMW extension: a JSON record is [media-type, base64url value, "
                         "indicator?]")
    if record[0] != media_type:
        raise NotOurs(record[0])
    if len(record) == 3 and not (isinstance(record[2], int) and record[2] & EVIDENCE):
        raise ValueError("CMW extension: the record is not marked as Evidence")
    value: str = record[1]
    if not _B64URL.fullmatch(value):
        raise ValueError("CMW extension: the value is not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("CMW extension: the value is not base64url") from None
