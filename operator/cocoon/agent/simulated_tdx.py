"""A simulated Intel TDX platform: v4 ECDSA quotes and their collateral under a per-cluster root.

The quote has Intel's layout (48-byte header, 584-byte TD report, ECDSA P-256 signature by an
attestation key, a QE report signed by the PCK key that binds that key, the PCK chain as
certification data type 5), and the collateral is what a PCCS serves (TCB info and QE identity
signed by a TCB signer, PCK and root CRLs). dcap-qvl verifies both exactly as it does Intel's;
only the root differs, and `cocoon.attestation.tdx` uses it only when a policy names it (with
allowSimulated). Keys are generated at run time and never committed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from cocoon.agent import simulated_pki
from cocoon.agent.simulated_pki import write_private
from cocoon.attestation.der import der_int, der_tlv
from cocoon.attestation.encoding import der, pem

DEFAULT_MEASUREMENT = hashlib.sha384(b"cocoon simulated guest").digest()
"""The simulated guest's launch measurement: SNP MEASUREMENT, or TDX MRTD."""
FMSPC = bytes.fromhex("C0C0A0000000")
SGX_EXTENSION = "1.2.840.113741.1.13.1"
INTEL_QE_VENDOR_ID = bytes.fromhex("939A7233F79C4CA9940A0DB3957F0607")
TEE_TYPE_TDX = 0x81
SGX_SVNS = (2, 2, 2, 2, 3, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0)
TDX_SVNS = (5, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)  # [1] = 0: the base TDX module
PCE_SVN = 11
QE_MR_SIGNER = hashlib.sha256(b"cocoon simulated quoting enclave").digest()
QE_ATTRIBUTES = bytes.fromhex("11000000000000000000000000000000")
QE_PROD_ID, QE_SVN = 2, 4
TD_ATTRIBUTES = bytes([0, 0, 0, 0x10, 0, 0, 0, 0])  # SEPT_VE_DISABLE, as production TDs set
DEFAULT_VALIDITY = timedelta(days=30)
P256_ORDER = int("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551", 16)
_FILES = ("tdx-root", "tdx-pck-ca", "tdx-tcb-signer")


def _der_oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        rest = arc >> 7
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        body += bytes(reversed(chunk))
    return der_tlv(0x06, bytes(body))


def _entry(suffix: str, value: bytes) -> bytes:
    return der_tlv(0x30, _der_oid(f"{SGX_EXTENSION}.{suffix}") + value)


def sgx_extension(ppid: bytes) -> bytes:
    """Intel's SGX extension of a PCK certificate: PPID, TCB (SVNs, PCESVN, CPUSVN), PCE-ID,
    FMSPC, SGX type; the values the collateral's TCB levels are matched against."""
    tcb = b"".join(_entry(f"2.{i + 1}", der_int(svn)) for i, svn in enumerate(SGX_SVNS))
    tcb += _entry("2.17", der_int(PCE_SVN)) + _entry("2.18", der_tlv(0x04, bytes(SGX_SVNS)))
    return der_tlv(
        0x30,
        _entry("1", der_tlv(0x04, ppid))
        + _entry("2", der_tlv(0x30, tcb))
        + _entry("3", der_tlv(0x04, b"\x00\x00"))
        + _entry("4", der_tlv(0x04, FMSPC))
        + _entry("5", der_tlv(0x0A, b"\x00")),
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    now: datetime,
    *,
    ca: bool,
    sgx: bytes | None = None,
) -> x509.Certificate:
    usage = dict.fromkeys(
        ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
         "encipher_only", "decipher_only"), False,
    )  # fmt: skip
    builder = (
        x509.CertificateBuilder()
        .subject_name(simulated_pki.name(subject))
        .issuer_name(issuer.subject if issuer is not None else simulated_pki.name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=not ca, key_cert_sign=ca, crl_sign=ca, **usage),
            critical=True,
        )
    )
    if sgx is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(SGX_EXTENSION), sgx), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _raw_signature(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _raw_public(key: ec.EllipticCurvePrivateKey) -> bytes:
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return point[1:]


def _crl(issuer: x509.Certificate, key: ec.EllipticCurvePrivateKey, now: datetime,
         validity: timedelta) -> str:  # fmt: skip
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(now - timedelta(hours=1))
        .next_update(now + validity)
        .add_extension(x509.CRLNumber(1), critical=False)
        .sign(key, hashes.SHA256())
    )
    return crl.public_bytes(serialization.Encoding.DER).hex()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class SimulatedTdx:
    """One cluster's simulated Intel side: a root, a PCK Platform CA and a TCB signer."""

    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    pck_ca_key: ec.EllipticCurvePrivateKey
    pck_ca: x509.Certificate
    tcb_key: ec.EllipticCurvePrivateKey
    tcb_signer: x509.Certificate
    platform: str = "cluster"

    @classmethod
    def generate(cls, *, now: datetime) -> SimulatedTdx:
        root_key, ca_key, tcb_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
        root = _cert("Simulated SGX Root CA", root_key, None, root_key, now, ca=True)
        pck_ca = _cert("Simulated SGX PCK Platform CA", ca_key, root, root_key, now, ca=True)
        signer = _cert("Simulated SGX TCB Signing", tcb_key, root, root_key, now, ca=False)
        return cls(root_key, root, ca_key, pck_ca, tcb_key, signer)

    def for_node(self, node: str) -> SimulatedTdx:
        """The same cluster chain, for the platform named `node` (its own PCK key and PPID)."""
        return dataclasses.replace(self, platform=node)

    def pck(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """This platform's PCK: a key derived from the CA key and the platform name (stable across
        restarts, like a real PCK), and a certificate carrying the SGX extension."""
        secret = self.pck_ca_key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )  # fmt: skip
        seed = hashlib.sha256(b"cocoon simulated pck\x00%b%b" % (secret, self.platform.encode()))
        key = ec.derive_private_key(int.from_bytes(seed.digest()) % P256_ORDER, ec.SECP256R1())
        ppid = hashlib.sha256(b"cocoon simulated ppid\x00" + self.platform.encode()).digest()[:16]
        cert = _cert(
            "Simulated SGX PCK Certificate", key, self.pck_ca, self.pck_ca_key,
            self.pck_ca.not_valid_before_utc + timedelta(days=1), ca=False,
            sgx=sgx_extension(ppid),
        )  # fmt: skip
        return key, cert

    def quote(
        self,
        report_data: bytes,
        *,
        mr_td: bytes = DEFAULT_MEASUREMENT,
        debug: bool = False,
        tamper: bool = False,
    ) -> bytes:
        """A TDX v4 quote for `report_data`; `tamper` flips an MRTD bit after signing."""
        header = struct.pack("<HHIHH", 4, 2, TEE_TYPE_TDX, 0, 0) + INTEL_QE_VENDOR_ID + bytes(20)
        attributes = bytes([TD_ATTRIBUTES[0] | int(debug)]) + TD_ATTRIBUTES[1:]
        body = (
            bytes(TDX_SVNS)
            + hashlib.sha384(b"cocoon simulated TDX module").digest()  # MRSEAM
            + bytes(48)  # MRSIGNERSEAM: Intel's module
            + bytes(8)  # SEAMATTRIBUTES
            + attributes
            + bytes.fromhex("e702060000000000")  # XFAM
            + mr_td
            + bytes(48 * 3)  # MRCONFIGID, MROWNER, MROWNERCONFIG
            + b"".join(hashlib.sha384(b"cocoon simulated rtmr %d" % i).digest() for i in range(4))
            + report_data.ljust(64, b"\x00")[:64]
        )
        attestation_key = ec.generate_private_key(ec.SECP256R1())
        public = _raw_public(attestation_key)
        auth = os.urandom(32)
        qe_report = (
            bytes(16) + bytes(4) + bytes(28) + QE_ATTRIBUTES
            + hashlib.sha256(b"cocoon simulated QE").digest() + bytes(32) + QE_MR_SIGNER
            + bytes(96) + struct.pack("<HH", QE_PROD_ID, QE_SVN) + bytes(60)
            + hashlib.sha256(public + auth).digest() + bytes(32)
        )  # fmt: skip
        pck_key, pck = self.pck()
        chain = pem([pck, self.pck_ca, self.root])
        certification = (
            qe_report
            + _raw_signature(pck_key, qe_report)
            + struct.pack("<H", len(auth)) + auth
            + struct.pack("<HI", 5, len(chain)) + chain
        )  # fmt: skip
        signed = bytearray(header + body)
        auth_data = (
            _raw_signature(attestation_key, bytes(signed))
            + public
            + struct.pack("<HI", 6, len(certification))
            + certification
        )
        if tamper:
            signed[48 + 136] ^= 0x01  # MRTD's first byte
        return bytes(signed) + struct.pack("<I", len(auth_data)) + auth_data

    def collateral(self, now: datetime, validity: timedelta = DEFAULT_VALIDITY) -> str:
        """What a PCCS serves for this platform type, valid from an hour ago for `validity`."""
        dates = {"issueDate": _iso(now - timedelta(hours=1)), "nextUpdate": _iso(now + validity)}
        level = {"tcbDate": "2024-03-13T00:00:00Z", "tcbStatus": "UpToDate"}
        tcb_info = {
            "id": "TDX", "version": 3, **dates, "fmspc": FMSPC.hex().upper(), "pceId": "0000",
            "tcbType": 0, "tcbEvaluationDataNumber": 17,
            "tdxModule": {"mrsigner": "00" * 48, "attributes": "00" * 8,
                          "attributesMask": "FF" * 8},
            "tcbLevels": [{"tcb": {
                "sgxtcbcomponents": [{"svn": svn} for svn in SGX_SVNS], "pcesvn": PCE_SVN,
                "tdxtcbcomponents": [{"svn": svn} for svn in TDX_SVNS]}, **level}],
        }  # fmt: skip
        qe_identity = {
            "id": "TD_QE", "version": 2, **dates, "tcbEvaluationDataNumber": 17,
            "miscselect": "00000000", "miscselectMask": "FFFFFFFF",
            "attributes": QE_ATTRIBUTES.hex().upper(),
            "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
            "mrsigner": QE_MR_SIGNER.hex().upper(), "isvprodid": QE_PROD_ID,
            "tcbLevels": [{"tcb": {"isvsvn": QE_SVN}, **level}],
        }  # fmt: skip
        tcb_text = json.dumps(tcb_info, separators=(",", ":"))
        qe_text = json.dumps(qe_identity, separators=(",", ":"))
        signer_chain = pem([self.tcb_signer, self.root]).decode()
        return json.dumps(
            {
                "pck_crl_issuer_chain": pem([self.pck_ca, self.root]).decode(),
                "root_ca_crl": _crl(self.root, self.root_key, now, validity),
                "pck_crl": _crl(self.pck_ca, self.pck_ca_key, now, validity),
                "tcb_info_issuer_chain": signer_chain,
                "tcb_info": tcb_text,
                "tcb_info_signature": _raw_signature(self.tcb_key, tcb_text.encode()).hex(),
                "qe_identity_issuer_chain": signer_chain,
                "qe_identity": qe_text,
                "qe_identity_signature": _raw_signature(self.tcb_key, qe_text.encode()).hex(),
            }
        )

    def root_der(self) -> bytes:
        return der(self.root)

    # --- persistence (beside the SNP files of a saved simulated TEE) --------------------------

    def save(self, directory: Path) -> None:
        certs = (self.root, self.pck_ca, self.tcb_signer)
        keys = (self.root_key, self.pck_ca_key, self.tcb_key)
        for name, cert, key in zip(_FILES, certs, keys, strict=True):
            (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            write_private(directory / f"{name}.key.pem", key)

    @classmethod
    def load(cls, directory: Path) -> SimulatedTdx | None:
        """The saved TDX chain, or None for a directory saved without one."""
        if not (directory / f"{_FILES[0]}.pem").exists():
            return None
        parts: list[object] = []
        for name in _FILES:
            key = serialization.load_pem_private_key(
                (directory / f"{name}.key.pem").read_bytes(), password=None
            )
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{name}.key.pem must hold a P-256 key")
            cert = x509.load_pem_x509_certificate((directory / f"{name}.pem").read_bytes())
            parts += [key, cert]
        return cls(*parts)  # type: ignore[arg-type]

    @staticmethod
    def file_names() -> list[str]:
        return [f"{n}.pem" for n in _FILES] + [f"{n}.key.pem" for n in _FILES]
