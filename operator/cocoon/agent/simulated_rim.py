"""Simulated NVIDIA RIMs: SWID XML in NVIDIA's shape, XML-DSig signed (ECDSA P-384) by a test
CoRIM root, with the golden values the simulated GPU reports, so RIM appraisal runs unchanged.

Like the rest of the simulated TEE the root carries the simulated organization, and a policy
trusts it only by listing it with allowSimulated.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from lxml import etree
from signxml.algorithms import DigestAlgorithm, SignatureMethod
from signxml.signer import XMLSigner

from cocoon.agent import simulated_pki
from cocoon.api.attestationpolicy import ExtraRoot
from cocoon.attestation.chain import sha256_der
from cocoon.attestation.enums import RootPurpose

SWID = "http://standards.iso.org/iso/19770/-2/2015/schema.xsd"
SHA384 = "http://www.w3.org/2001/04/xmlenc#sha384"


@dataclass(frozen=True)
class SimulatedRimSigner:
    root: x509.Certificate
    leaf_key: ec.EllipticCurvePrivateKey
    leaf: x509.Certificate

    @classmethod
    def generate(cls, *, now: datetime) -> SimulatedRimSigner:
        root_key, leaf_key = simulated_pki.p384(), simulated_pki.p384()
        cert = simulated_pki.certificate
        root = cert("Simulated CoRIM Root", root_key, None, root_key, now, ca=True)
        leaf = cert("Simulated RIM Signer", leaf_key, root, root_key, now, ca=False)
        return cls(root, leaf_key, leaf)

    def extra_root(self) -> ExtraRoot:
        return ExtraRoot(
            name="simulated-rim",
            purpose=RootPurpose.NVIDIA_RIM_SIGNING,
            sha256=sha256_der(self.root),
            pem=self.root.public_bytes(serialization.Encoding.PEM).decode(),
        )

    def rim(self, kind: str, version: str, golden: Mapping[int, bytes]) -> bytes:
        """A signed RIM for the driver or VBIOS `version`; RIM index i is SPDM block i + 1."""
        document = etree.Element(f"{{{SWID}}}SoftwareIdentity", nsmap={None: SWID, "ns2": SHA384})
        tag = hashlib.sha384(f"{kind} {version}".encode()).hexdigest()
        document.attrib.update({"name": "GH100", "tagId": tag, "version": "1.0"})
        etree.SubElement(
            document,
            f"{{{SWID}}}Meta",
            colloquialVersion=version,
            product="GH100",
            edition="GPU" if kind == "driver" else "VBIOS",
        )
        payload = etree.SubElement(document, f"{{{SWID}}}Payload")
        for index, value in sorted(golden.items()):
            resource = etree.SubElement(payload, f"{{{SWID}}}Resource")
            resource.attrib.update(
                {"type": "Measurement", "index": str(index - 1), "active": "True",
                 "alternatives": "1", f"{{{SHA384}}}Hash0": value.hex()}
            )  # fmt: skip
        chain = [c.public_bytes(serialization.Encoding.PEM) for c in (self.leaf, self.root)]
        signed = XMLSigner(
            signature_algorithm=SignatureMethod.ECDSA_SHA384,
            digest_algorithm=DigestAlgorithm.SHA384,
        ).sign(document, key=self.leaf_key, cert=b"".join(chain).decode())
        return bytes(etree.tostring(signed))
