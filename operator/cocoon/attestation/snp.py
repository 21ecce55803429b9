"""AMD SEV-SNP attestation reports: parse, check the VCEK/VLEK chain to a pinned ARK, the report
signature, and the binding between the certificate and the chip (CHIP_ID, TCB SPLs).

Authenticity only; policy (debug, VMPL, measurement, minimum TCB, report_data) is in appraisal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from cocoon.attestation import roots
from cocoon.attestation.chain import check_revocation, verify_chain
from cocoon.attestation.encoding import MALFORMED
from cocoon.attestation.enums import Revocation, RootPurpose
from cocoon.attestation.verdict import Rejected

REPORT_SIZE = 0x4A0
SIGNED_END = 0x2A0
HCL_HEADER = b"HCLA"
HCL_REPORT_OFFSET = 0x20
POLICY_DEBUG_BIT = 1 << 19
SIG_ALGO_ECDSA_P384_SHA384 = 1

_AMD = "1.3.6.1.4.1.3704.1"
OID_PRODUCT_NAME = x509.ObjectIdentifier(f"{_AMD}.2")
OID_HWID = x509.ObjectIdentifier(f"{_AMD}.4")
OID_SPL = {
    "bootloader": x509.ObjectIdentifier(f"{_AMD}.3.1"),
    "tee": x509.ObjectIdentifier(f"{_AMD}.3.2"),
    "snp": x509.ObjectIdentifier(f"{_AMD}.3.3"),
    "microcode": x509.ObjectIdentifier(f"{_AMD}.3.8"),
    "fmc": x509.ObjectIdentifier(f"{_AMD}.3.9"),
}


@dataclass(frozen=True)
class Tcb:
    """A TCB_VERSION: security patch levels of each firmware component."""

    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None = None

    @classmethod
    def parse(cls, raw: bytes, product: str) -> Tcb:
        if product == "Turin":
            return cls(bootloader=raw[1], tee=raw[2], snp=raw[3], microcode=raw[7], fmc=raw[0])
        return cls(bootloader=raw[0], tee=raw[1], snp=raw[6], microcode=raw[7])

    def encode(self, product: str) -> bytes:
        raw = bytearray(8)
        if product == "Turin":
            raw[0], raw[1], raw[2], raw[3] = self.fmc or 0, self.bootloader, self.tee, self.snp
        else:
            raw[0], raw[1], raw[6] = self.bootloader, self.tee, self.snp
        raw[7] = self.microcode
        return bytes(raw)

    def components(self) -> dict[str, int]:
        values = {
            "bootloader": self.bootloader,
            "tee": self.tee,
            "snp": self.snp,
            "microcode": self.microcode,
        }
        if self.fmc is not None:
            values["fmc"] = self.fmc
        return values


@dataclass(frozen=True)
class SnpReport:
    """The fields of ATTESTATION_REPORT that verification or policy reads."""

    raw: bytes
    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: bytes
    platform_info: int
    flags: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    reported_tcb: bytes
    chip_id: bytes
    committed_tcb: bytes
    launch_tcb: bytes
    signature_r: bytes
    signature_s: bytes

    @property
    def debug(self) -> bool:
        return bool(self.policy & POLICY_DEBUG_BIT)

    @property
    def signed_by_vlek(self) -> bool:
        return (self.flags >> 2) & 0b111 == 1

    @property
    def chip_id_masked(self) -> bool:
        return bool(self.flags & 0b10)


def _u32(raw: bytes, offset: int) -> int:
    return int.from_bytes(raw[offset : offset + 4], "little")


def _u64(raw: bytes, offset: int) -> int:
    return int.from_bytes(raw[offset : offset + 8], "little")


def parse_report(data: bytes) -> SnpReport:
    """A bare 0x4A0-byte report, or one wrapped in Azure's HCL report at offset 0x20."""
    raw = data
    if len(raw) > REPORT_SIZE and raw[:4] == HCL_HEADER:
        raw = raw[HCL_REPORT_OFFSET : HCL_REPORT_OFFSET + REPORT_SIZE]
    if len(raw) != REPORT_SIZE:
        raise Rejected(
            MALFORMED,
            f"an SEV-SNP report is {REPORT_SIZE} bytes, got {len(raw)}: pass the unmodified "
            "report (the outblob of configfs-tsm or /dev/sev-guest)",
        )
    version = _u32(raw, 0x00)
    if not 2 <= version <= 5:
        raise Rejected(MALFORMED, f"unsupported SEV-SNP report version {version} (want 2..5)")
    return SnpReport(
        raw=raw,
        version=version,
        guest_svn=_u32(raw, 0x04),
        policy=_u64(raw, 0x08),
        family_id=raw[0x10:0x20],
        image_id=raw[0x20:0x30],
        vmpl=_u32(raw, 0x30),
        signature_algo=_u32(raw, 0x34),
        current_tcb=raw[0x38:0x40],
        platform_info=_u64(raw, 0x40),
        flags=_u32(raw, 0x48),
        report_data=raw[0x50:0x90],
        measurement=raw[0x90:0xC0],
        host_data=raw[0xC0:0xE0],
        id_key_digest=raw[0xE0:0x110],
        author_key_digest=raw[0x110:0x140],
        report_id=raw[0x140:0x160],
        reported_tcb=raw[0x180:0x188],
        chip_id=raw[0x1A0:0x1E0],
        committed_tcb=raw[0x1E0:0x1E8],
        launch_tcb=raw[0x1F0:0x1F8],
        signature_r=raw[0x2A0:0x2E8],
        signature_s=raw[0x2E8:0x330],
    )


def _extension_bytes(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> bytes | None:
    try:
        value = cert.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None
    return value.value if isinstance(value, x509.UnrecognizedExtension) else None


def _der_integer(raw: bytes) -> int | None:
    if len(raw) < 3 or raw[0] != 0x02 or raw[1] != len(raw) - 2:
        return None
    return int.from_bytes(raw[2:], "big", signed=True)


def product_of(cert: x509.Certificate) -> str:
    """Milan, Genoa or Turin, from the productName extension or the issuer's name."""
    raw = _extension_bytes(cert, OID_PRODUCT_NAME)
    names = []
    if raw is not None and len(raw) > 2 and raw[0] == 0x16:
        names.append(raw[2:].decode("ascii", "replace"))
    names += [str(a.value) for a in cert.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    for name in names:
        for product in roots.AMD_PRODUCTS:
            if product in name:
                return product
    raise Rejected(
        "UnknownProduct",
        f"cannot tell the AMD product (Milan, Genoa, Turin) of '{cert.subject.rfc4514_string()}'",
    )


@dataclass(frozen=True)
class AuthenticSnp:
    """An SNP report whose signature, chain and chip binding hold."""

    report: SnpReport
    product: str
    signing_key: str
    root: str
    simulated: bool
    revocation: str

    @property
    def reported_tcb(self) -> Tcb:
        return Tcb.parse(self.report.reported_tcb, self.product)

    def claims(self) -> dict[str, object]:
        r = self.report
        return {
            "product": self.product,
            "signingKey": self.signing_key,
            "version": r.version,
            "policy": hex(r.policy),
            "debug": r.debug,
            "vmpl": r.vmpl,
            "guestSvn": r.guest_svn,
            "measurement": r.measurement.hex(),
            "reportData": r.report_data.hex(),
            "hostData": r.host_data.hex(),
            "chipId": r.chip_id.hex(),
            "reportedTcb": self.reported_tcb.components(),
            "committedTcb": Tcb.parse(r.committed_tcb, self.product).components(),
            "root": self.root,
            "simulated": self.simulated,
            "revocation": self.revocation,
        }


def _verify_signature(report: SnpReport, key_cert: x509.Certificate) -> None:
    key = key_cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise Rejected("BadCertificate", "the VCEK/VLEK must hold an ECDSA P-384 public key")
    signature = encode_dss_signature(
        int.from_bytes(report.signature_r, "little"), int.from_bytes(report.signature_s, "little")
    )
    try:
        key.verify(signature, report.raw[:SIGNED_END], ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        raise Rejected(
            "BadSignature",
            "the SEV-SNP report signature does not verify with the VCEK/VLEK: the report was "
            "altered or belongs to another chip",
        ) from None


def _check_binding(report: SnpReport, key_cert: x509.Certificate, product: str) -> None:
    """The certificate speaks for this chip at this TCB (VCEK), or at least this TCB (VLEK)."""
    if not report.signed_by_vlek:
        hwid = _extension_bytes(key_cert, OID_HWID)
        if hwid is not None and len(hwid) == 66 and hwid[:2] == b"\x04\x40":
            hwid = hwid[2:]
        if hwid != report.chip_id:
            detail = " (the guest masked CHIP_ID)" if report.chip_id_masked else ""
            raise Rejected(
                "ChipIdMismatch",
                f"the VCEK's hwID does not equal the report's CHIP_ID{detail}: fetch the VCEK "
                "for this chip",
            )
    tcb = Tcb.parse(report.reported_tcb, product).components()
    for name, value in tcb.items():
        raw = _extension_bytes(key_cert, OID_SPL[name])
        certified = _der_integer(raw) if raw is not None else None
        if certified != value:
            raise Rejected(
                "TcbMismatch",
                f"the certificate's {name} SPL ({certified}) differs from the report's "
                f"REPORTED_TCB ({value}): fetch the VCEK/VLEK for the reported TCB",
            )


def verify(
    report_bytes: bytes,
    key_cert: x509.Certificate,
    chain: Sequence[x509.Certificate] | None,
    trust: roots.TrustStore,
    at: datetime,
    *,
    crls: Sequence[x509.CertificateRevocationList] = (),
    revocation: Revocation = Revocation.ACCEPT_UNKNOWN,
) -> AuthenticSnp:
    """Authenticate a report: `chain` (ASK/ASVK [+ARK]) or, if None, AMD's for the product."""
    report = parse_report(report_bytes)
    if report.signature_algo != SIG_ALGO_ECDSA_P384_SHA384:
        raise Rejected(
            "UnsupportedSignatureAlgorithm",
            f"SIGNATURE_ALGO is {report.signature_algo}; only 1 (ECDSA P-384 SHA-384) exists",
        )
    product = product_of(key_cert)
    cn = " ".join(
        str(a.value) for a in key_cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    )
    key_kind = "vlek" if "VLEK" in cn else "vcek"
    if (key_kind == "vlek") != report.signed_by_vlek:
        raise Rejected(
            "SigningKeyMismatch",
            f"the report says it is signed by the {'VLEK' if report.signed_by_vlek else 'VCEK'}"
            f" but the certificate given is a {key_kind.upper()}",
        )
    vlek = key_kind == "vlek"
    intermediates = (
        list(chain) if chain is not None else list(roots.amd_intermediates(product, vlek))
    )
    path, anchor = verify_chain(
        key_cert, intermediates, trust.for_purpose(RootPurpose.AMD_ARK), at, f"{key_kind.upper()}"
    )
    root_cn = anchor.cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if not root_cn or not str(root_cn[0].value).endswith(product):
        raise Rejected(
            "ProductMismatch",
            f"the {key_kind.upper()} is for {product} but chains to '{anchor.name}'",
        )
    _verify_signature(report, key_cert)
    _check_binding(report, key_cert, product)
    status = check_revocation(path, crls, at, revocation, key_kind.upper())
    return AuthenticSnp(report, product, key_kind, anchor.name, anchor.simulated, status)
