"""The little DER writing the project does by hand: single elements whose body it already has
(the CMW extension's string; the simulated hardware's certificate extensions)."""

from __future__ import annotations


def der_tlv(tag: int, body: bytes) -> bytes:
    """One DER element: tag, minimal definite length, body."""
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def der_int(value: int) -> bytes:
    """A non-negative INTEGER."""
    return der_tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))
