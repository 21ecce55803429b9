"""NVIDIA Reference Integrity Manifests: SWID XML with an enveloped XML-DSig signature.

The signing chain is checked by our own validator to the pinned CoRIM root at an explicit time
(NVIDIA's packaged RIM signers expire), the signature by signxml with that leaf, and golden
values are read only from the XML signxml returns as signed, never from the input document.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from lxml import etree
from signxml.exceptions import SignXMLException
from signxml.verifier import SignatureConfiguration, XMLVerifier

from cocoon.attestation.chain import check_revocation, verify_chain
from cocoon.attestation.encoding import MALFORMED
from cocoon.attestation.enums import Revocation, RootPurpose
from cocoon.attestation.roots import TrustStore
from cocoon.attestation.verdict import Failure, Rejected

DSIG = "http://www.w3.org/2000/09/xmldsig#"
_VBIOS_VERSION = re.compile(r"^[0-9a-fA-F]{2}(\.[0-9a-fA-F]{2}){4}$")
_HASH_ATTR = re.compile(r"^(\{[^}]*\})?Hash\d+$")


@dataclass(frozen=True)
class Rim:
    """The signed content of one RIM: which firmware it describes and its golden values."""

    kind: str
    version: str
    product: str
    measurements: Mapping[int, tuple[bytes, ...]]
    signer: str
    root: str
    simulated: bool
    revocation: str

    def applies_to(self, driver_version: str, vbios_version: str) -> bool:
        wanted = vbios_version if self.kind == "vbios" else driver_version
        return self.version.lower() == wanted.lower()


def _parse_xml(data: bytes) -> etree._Element:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    try:
        return etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise Rejected(MALFORMED, f"the RIM is not well-formed XML: {exc}") from None


def _signing_certificates(root: etree._Element) -> list[x509.Certificate]:
    certs = []
    for node in root.iterfind(f".//{{{DSIG}}}Signature//{{{DSIG}}}X509Certificate"):
        try:
            certs.append(x509.load_der_x509_certificate(base64.b64decode(node.text or "")))
        except (ValueError, binascii.Error):
            raise Rejected(MALFORMED, "a RIM signing certificate is not base64 DER") from None
    if not certs:
        raise Rejected("IncompleteCertificateChain", "the RIM carries no X509Certificate")
    return certs


CACHE_SIZE = 256
_cache: dict[tuple[object, ...], tuple[Rim, datetime, datetime]] = {}


def verify_cached(
    data: bytes,
    trust: TrustStore,
    at: datetime,
    *,
    crls: Sequence[x509.CertificateRevocationList] = (),
    revocation: Revocation = Revocation.ACCEPT_UNKNOWN,
) -> Rim:
    """`verify`, remembered by the RIM's SHA-256 (with the roots, CRLs and stance it was checked
    under) for as long as its signing chain and those CRLs stay valid: a fleet shares a handful
    of RIMs, and XML-DSig is the costliest step of a GPU's appraisal. Refusals are not cached."""
    anchors = tuple(sorted(a.sha256 for a in trust.for_purpose(RootPurpose.NVIDIA_RIM_SIGNING)))
    key = (
        hashlib.sha256(data).hexdigest(),
        anchors,
        tuple(crl.fingerprint(hashes.SHA256()) for crl in crls),
        revocation,
    )
    hit = _cache.get(key)
    if hit is not None and hit[1] <= at < hit[2]:
        return hit[0]
    manifest, path = _verify(data, trust, at, crls=crls, revocation=revocation)
    updates = [crl.next_update_utc for crl in crls if crl.next_update_utc is not None]
    valid_from = max(c.not_valid_before_utc for c in path)
    valid_until = min([c.not_valid_after_utc for c in path] + updates)
    if len(_cache) >= CACHE_SIZE:
        _cache.pop(next(iter(_cache)))
    _cache[key] = (manifest, valid_from, valid_until)
    return manifest


def verify(
    data: bytes,
    trust: TrustStore,
    at: datetime,
    *,
    crls: Sequence[x509.CertificateRevocationList] = (),
    revocation: Revocation = Revocation.ACCEPT_UNKNOWN,
) -> Rim:
    """Authenticate a RIM at `at` and return its signed golden measurements."""
    return _verify(data, trust, at, crls=crls, revocation=revocation)[0]


def _verify(
    data: bytes,
    trust: TrustStore,
    at: datetime,
    *,
    crls: Sequence[x509.CertificateRevocationList],
    revocation: Revocation,
) -> tuple[Rim, list[x509.Certificate]]:
    document = _parse_xml(data)
    certs = _signing_certificates(document)
    path, anchor = verify_chain(
        certs[0], certs[1:], trust.for_purpose(RootPurpose.NVIDIA_RIM_SIGNING), at, "RIM signer"
    )
    config = SignatureConfiguration(verification_time=at, ignore_ambiguous_key_info=True)
    try:
        result = XMLVerifier().verify(document, x509_cert=certs[0], expect_config=config)
    except SignXMLException as exc:
        raise Rejected(
            "BadRimSignature",
            f"the RIM's XML signature does not verify ({exc}): the RIM was altered; fetch it "
            "again from NVIDIA's RIM service",
        ) from None
    signed = result.signed_xml if not isinstance(result, list) else None
    if signed is None:
        raise Rejected("BadRimSignature", "the RIM's signature covers no content")
    status = check_revocation(path, crls, at, revocation, "RIM signer")
    meta = next((e for e in signed.iter() if etree.QName(e).localname == "Meta"), None)
    version = meta.get("colloquialVersion", "") if meta is not None else ""
    manifest = Rim(
        kind="vbios" if _VBIOS_VERSION.match(version) else "driver",
        version=version,
        product=meta.get("product", "") if meta is not None else "",
        measurements=_golden(signed),
        signer=certs[0].subject.rfc4514_string(),
        root=anchor.name,
        simulated=anchor.simulated,
        revocation=status,
    )
    return manifest, path


def _golden(signed: etree._Element) -> dict[int, tuple[bytes, ...]]:
    golden: dict[int, tuple[bytes, ...]] = {}
    for resource in signed.iter():
        if etree.QName(resource).localname != "Resource":
            continue
        if resource.get("type") != "Measurement" or resource.get("active") != "True":
            continue
        try:
            index = int(resource.get("index", ""))
            values = tuple(
                bytes.fromhex(v) for k, v in resource.attrib.items() if _HASH_ATTR.match(str(k))
            )
        except ValueError:
            raise Rejected(MALFORMED, "a RIM measurement has a bad index or hash") from None
        golden[index] = values
    return golden


def compare(measurements: Mapping[int, bytes], rim: Rim) -> Failure | None:
    """Every active golden value must match: RIM index i is SPDM measurement block i + 1."""
    for index, alternatives in sorted(rim.measurements.items()):
        actual = measurements.get(index + 1)
        if actual is None:
            return Failure(
                "MeasurementMissing",
                f"the GPU reported no measurement {index} that the {rim.kind} RIM "
                f"{rim.version} requires",
            )
        if actual not in alternatives:
            return Failure(
                "MeasurementMismatch",
                f"GPU measurement {index} ({actual.hex()[:16]}…) matches none of the "
                f"{rim.kind} RIM {rim.version} golden values: the firmware is not the one "
                "NVIDIA published",
            )
    return None


def claimed_version(data: bytes) -> str:
    """The colloquialVersion a RIM claims before any check: only to say which GPU a bad RIM
    was meant for, never to trust its content."""
    try:
        document = _parse_xml(data)
    except Rejected:
        return ""
    meta = next((e for e in document.iter() if etree.QName(e).localname == "Meta"), None)
    return meta.get("colloquialVersion", "") if meta is not None else ""
