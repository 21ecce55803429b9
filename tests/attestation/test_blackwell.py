"""Real NVIDIA Blackwell (GB100 / B200) evidence verifies as NVIDIA's verifier verifies it."""

from __future__ import annotations

import pytest
from attestation_vectors import DEFAULT, read
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cocoon.attestation import appraisal, dice, encoding

AT = 1766000000  # the chain is valid 2023-06-20 .. 9999
REPORT = encoding.decode_blob(read("nvgpu/b200_575_report.hex"))
CHAIN = read("nvgpu/b200_575_chain.pem")
NONCE = bytes.fromhex("931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb")
FWID = (
    "d090cab1b6e6ffddca83d1781e25b3f040fa1f3c7608230c"
    "b5f41b1c1b99f5f748349e59d0ef8eb830c9bc79ccf77502"
)


def test_blackwell_verifies_with_nvidias_claims() -> None:
    result = appraisal.appraise_gpu(REPORT, CHAIN, DEFAULT, now=AT, nonce=NONCE)
    assert result.reason is None, result.message
    claims = result.claims
    # the values NVIDIA's attestation SDK asserts for this sample (verifier_test.cpp)
    assert claims["hwModel"] == "GB100 A01 GSP BROM"
    assert claims["ueid"] == "474146966256510137525212816567191319424869109849"
    assert claims["driverVersion"] == "575.32"
    assert claims["vbiosVersion"] == "97.00.88.00.0f"
    assert claims["fwidBound"] is True
    assert claims["ccMode"] == "Unreported"


def test_blackwell_fwid_comes_from_the_dice_tcb_info() -> None:
    leaf = x509.load_pem_x509_certificates(CHAIN)[0]
    assert dice.leaf_fwid(leaf) == bytes.fromhex(FWID)
    raw = leaf.extensions.get_extension_for_oid(dice.OID_TCB_INFO_BLACKWELL).value.value  # type: ignore[attr-defined]
    assert raw[-dice.FWID_SIZE :] != bytes.fromhex(FWID)  # Hopper's rule would read the wrong bytes
    assert len(dice.tcb_info_fwids(raw)) == 2


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        bytes.fromhex("3000"),  # no fwids
        bytes.fromhex("3002a600"),  # empty fwids
        bytes.fromhex("3006a604300204" + "00"),  # an FWID without its algorithm
        bytes.fromhex("3081b1"),  # length past the end
        bytes.fromhex("30020400ff"),  # trailing byte after the SEQUENCE
    ],
)
def test_malformed_tcb_info(raw: bytes) -> None:
    with pytest.raises(ValueError):
        dice.tcb_info_fwids(raw)


def _positions(size: int, step: int = 37) -> list[int]:
    return sorted({*range(0, size, step), size - 1, 4, 37 + 8, size - 96, size - 1})


@pytest.mark.parametrize("position", _positions(len(REPORT)))
def test_one_bit_flip_anywhere_is_rejected(position: int) -> None:
    flipped = bytearray(REPORT)
    flipped[position] ^= 0x01
    result = appraisal.appraise_gpu(bytes(flipped), CHAIN, DEFAULT, now=AT, nonce=NONCE)
    assert result.reason is not None, f"a flip at byte {position} was accepted"


def test_one_bit_flip_in_the_leaf_fwid_is_rejected() -> None:
    leaf_pem, rest = CHAIN.split(b"-----END CERTIFICATE-----\n", 1)
    der = bytearray(x509.load_pem_x509_certificate(leaf_pem + b"-----END CERTIFICATE-----\n")
                    .public_bytes(serialization.Encoding.DER))  # fmt: skip
    der[der.index(bytes.fromhex(FWID))] ^= 0x01
    forged = x509.load_der_x509_certificate(bytes(der)).public_bytes(serialization.Encoding.PEM)
    result = appraisal.appraise_gpu(REPORT, forged + rest, DEFAULT, now=AT, nonce=NONCE)
    assert result.reason is not None
