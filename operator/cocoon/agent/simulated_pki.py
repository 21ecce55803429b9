"""Certificates for the simulated hardware: the same shapes as the vendors' (RSA-PSS AMD roots,
P-384 VCEKs with their TCB extensions, P-384 NVIDIA chains), marked as simulated in the
organization every policy check looks for."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from cocoon.attestation import snp
from cocoon.attestation.der import der_int, der_tlv
from cocoon.attestation.roots import SIMULATED_ORGANIZATION

PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
SPL_OIDS = {
    "bootloader": "1.3.6.1.4.1.3704.1.3.1",
    "tee": "1.3.6.1.4.1.3704.1.3.2",
    "snp": "1.3.6.1.4.1.3704.1.3.3",
    "microcode": "1.3.6.1.4.1.3704.1.3.8",
    "fmc": "1.3.6.1.4.1.3704.1.3.9",
}
OID_PRODUCT_NAME = "1.3.6.1.4.1.3704.1.2"
OID_HWID = "1.3.6.1.4.1.3704.1.4"


def name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, SIMULATED_ORGANIZATION),
        ]
    )


def certificate(
    subject: str,
    key: Key,
    issuer: x509.Certificate | None,
    issuer_key: Key,
    now: datetime,
    *,
    ca: bool,
    extensions: dict[str, bytes] | None = None,
) -> x509.Certificate:
    """A certificate valid from a day before `now` for ten years, signed as the vendor signs."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(issuer.subject if issuer is not None else name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    for oid, value in (extensions or {}).items():
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), critical=False
        )
    if isinstance(issuer_key, rsa.RSAPrivateKey):
        return builder.sign(issuer_key, hashes.SHA384(), rsa_padding=PSS)
    return builder.sign(issuer_key, hashes.SHA384())


def p384() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def vcek(
    ask: x509.Certificate,
    *,
    ask_key: rsa.RSAPrivateKey,
    chip_id: bytes,
    product: str,
    tcb: snp.Tcb,
    now: datetime,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A VCEK whose extensions (TCB SPLs, product, hwID) match the reports it will sign."""
    extensions = {SPL_OIDS[k]: der_int(v) for k, v in tcb.components().items()}
    extensions[OID_PRODUCT_NAME] = der_tlv(0x16, f"{product}-B0".encode())
    extensions[OID_HWID] = chip_id
    key = p384()
    return key, certificate("SEV-VCEK", key, ask, ask_key, now, ca=False, extensions=extensions)


def write_private(path: Path, key: Key) -> None:
    """A PKCS#8 PEM private key, mode 0600 even when the file existed."""
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )  # fmt: skip
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, 0o600)  # O_CREAT's mode does not apply to a file that already existed


def read_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def read_key(path: Path) -> object:
    return serialization.load_pem_private_key(path.read_bytes(), password=None)
