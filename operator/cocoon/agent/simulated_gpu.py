"""Simulated NVIDIA GPUs: per-device P-384 keys under the cluster's GPU CA, with the firmware's
FWID in a DICE TCB-info extension, and SPDM GET_MEASUREMENTS evidence signed by them, in the byte
layout the production parser (`attestation/nvgpu.py`) reads."""

from __future__ import annotations

import hashlib
import os
import struct
from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from cocoon.agent import simulated_pki
from cocoon.attestation import dice, nvgpu
from cocoon.attestation.der import der_tlv

GPU_MEASUREMENTS = 64
P384_ORDER = int(
    "ffffffffffffffffffffffffffffffffffffffffffffffff"
    "c7634d81f4372ddf581a0db248b0a77aecec196accc52973",
    16,
)


def encode_vbios_version(version: str) -> bytes:
    """The inverse of `nvgpu.format_vbios_version`."""
    parts = version.split(".")
    return int("".join(parts[:4]), 16).to_bytes(4, "little") + bytes([int(parts[4], 16)]) + bytes(3)


def simulated_gpu_measurement(index: int) -> bytes:
    """The golden value the simulated GPU reports for a measurement block."""
    return hashlib.sha384(b"cocoon simulated gpu measurement %d" % index).digest()


def device(
    ica: x509.Certificate, ica_key: ec.EllipticCurvePrivateKey, chip_id: bytes, fwid: bytes,
    index: int,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """GPU `index` of the chip `chip_id`: its attestation key (derived from the GPU CA key, the
    CHIP_ID and the index, so stable across restarts) and leaf certificate with the FWID."""
    secret = ica_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    seed = hashlib.sha384(b"cocoon simulated gpu\x00%b%b%d" % (secret, chip_id, index))
    key = ec.derive_private_key(int.from_bytes(seed.digest()) % P384_ORDER, ec.SECP384R1())
    tcb_info = der_tlv(0x30, der_tlv(0xA6, der_tlv(0x30, der_tlv(0x04, fwid))))
    leaf = simulated_pki.certificate(
        f"Simulated GH100 FMC LF {index}",
        key,
        ica,
        ica_key,
        ica.not_valid_before_utc + timedelta(days=1),
        ca=False,
        extensions={dice.OID_TCB_INFO.dotted_string: tcb_info},
    )
    return key, leaf


def spdm_report(
    key: ec.EllipticCurvePrivateKey,
    fwid: bytes,
    nonce: bytes,
    *,
    driver_version: str,
    vbios_version: str,
    measurements: dict[int, bytes] | None,
    cc_mode: int | None,
    tamper: bool,
) -> bytes:
    """SPDM GET_MEASUREMENTS request + response signed by `key`."""
    values = measurements or {i: simulated_gpu_measurement(i) for i in range(1, 65)}
    request = bytes([0x11, 0xE0, 0x01, 0xFF]) + nonce + b"\x00"
    record = b"".join(
        struct.pack("<BBHBH", index, 0x01, len(v) + 3, 0x01, len(v)) + v
        for index, v in sorted(values.items())
    )
    opaque = b"".join(
        struct.pack("<HH", kind, len(value)) + value
        for kind, value in (
            (nvgpu.Opaque.VBIOS_VERSION, encode_vbios_version(vbios_version)),
            (nvgpu.Opaque.CHIP_SKU, b"882\x00"),
            (nvgpu.Opaque.PROJECT, b"1010\x00"),
            (nvgpu.Opaque.PROJECT_SKU, b"0200\x00"),
            (nvgpu.Opaque.DRIVER_VERSION, driver_version.encode() + b"\x00"),
            (nvgpu.Opaque.FWID, fwid),
        )
    )
    if cc_mode is not None:
        opaque += struct.pack("<HHI", nvgpu.Opaque.FEATURE_FLAG, 4, cc_mode)
    response = (
        bytes([0x11, 0x60, 0x00, 0x00, len(values)])
        + len(record).to_bytes(3, "little")
        + record
        + os.urandom(32)
        + struct.pack("<H", len(opaque))
        + opaque
    )
    r, s = decode_dss_signature(key.sign(request + response, ec.ECDSA(hashes.SHA384())))
    report = bytearray(request + response + r.to_bytes(48, "big") + s.to_bytes(48, "big"))
    if tamper:
        report[nvgpu.REQUEST_SIZE + 8 + 7] ^= 0x01
    return bytes(report)
