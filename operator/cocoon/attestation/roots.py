"""Vendor roots shipped in `roots/`, pinned by SHA-256 of DER, and the trust store built on them.

The PEM files are public vendor certificates; the pins in this module are what make them trusted,
so a swapped file fails loudly at load time instead of widening trust.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources

from cryptography import x509

from cocoon.attestation.chain import Anchor, sha256_der
from cocoon.attestation.enums import BuiltinRoot, RootPurpose

SIMULATED_ORGANIZATION = "Cocoon Simulated TEE"
"""Organization of every simulated-TEE root; such a root is trusted only when a policy lists it
and sets allowSimulated."""

PINS: dict[BuiltinRoot, str] = {
    BuiltinRoot.INTEL_SGX_ROOT_CA: (
        "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
    ),
    BuiltinRoot.AMD_ARK_MILAN: "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
    BuiltinRoot.AMD_ARK_GENOA: "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
    BuiltinRoot.AMD_ARK_TURIN: "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
    BuiltinRoot.NVIDIA_DEVICE_IDENTITY_CA: (
        "102bf659d5419614c9d8e6aecebc80454eb26b1df6a769ac720b9a690b167b48"
    ),
    BuiltinRoot.NVIDIA_CORIM_SIGNING_ROOT_CA: (
        "12977b5115acb0381179279fffeb5a8c4d264971ebb32298023a465fa41df5d1"
    ),
}

_FILES: dict[BuiltinRoot, tuple[str, RootPurpose]] = {
    BuiltinRoot.INTEL_SGX_ROOT_CA: ("intel_sgx_root_ca.pem", RootPurpose.INTEL_SGX),
    BuiltinRoot.AMD_ARK_MILAN: ("amd_ask_ark_milan.pem", RootPurpose.AMD_ARK),
    BuiltinRoot.AMD_ARK_GENOA: ("amd_ask_ark_genoa.pem", RootPurpose.AMD_ARK),
    BuiltinRoot.AMD_ARK_TURIN: ("amd_ask_ark_turin_vcek.pem", RootPurpose.AMD_ARK),
    BuiltinRoot.NVIDIA_DEVICE_IDENTITY_CA: (
        "nvidia_device_identity_ca.pem",
        RootPurpose.NVIDIA_DEVICE_IDENTITY,
    ),
    BuiltinRoot.NVIDIA_CORIM_SIGNING_ROOT_CA: (
        "nvidia_corim_signing_root_ca.pem",
        RootPurpose.NVIDIA_RIM_SIGNING,
    ),
}

AMD_PRODUCTS = ("Milan", "Genoa", "Turin")
_AMD_INTERMEDIATE_FILES = {
    ("Milan", False): "amd_ask_ark_milan.pem",
    ("Milan", True): "amd_ask_ark_milan_vlek.pem",
    ("Genoa", False): "amd_ask_ark_genoa.pem",
    ("Genoa", True): "amd_ask_ark_genoa_vlek.pem",
    ("Turin", False): "amd_ask_ark_turin_vcek.pem",
    ("Turin", True): "amd_ask_ark_turin_vlek.pem",
}


def _read(name: str) -> list[x509.Certificate]:
    data = resources.files("cocoon.attestation").joinpath("roots", name).read_bytes()
    return x509.load_pem_x509_certificates(data)


@cache
def builtin_anchor(root: BuiltinRoot) -> Anchor:
    """The packaged root, refused unless its DER hash equals the pin in this module."""
    name, purpose = _FILES[root]
    cert = _read(name)[-1]
    if sha256_der(cert) != PINS[root]:
        raise RuntimeError(f"packaged root {name} does not match its pin; the package is corrupt")
    return Anchor(str(root), purpose, cert)


@cache
def amd_intermediates(product: str, vlek: bool) -> tuple[x509.Certificate, ...]:
    """AMD's ASK (VCEK) or ASVK (VLEK) for a product; they chain to the pinned ARK."""
    return tuple(_read(_AMD_INTERMEDIATE_FILES[(product, vlek)])[:-1])


def is_simulated(cert: x509.Certificate) -> bool:
    orgs = cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
    return any(o.value == SIMULATED_ORGANIZATION for o in orgs)


@dataclass(frozen=True)
class TrustStore:
    """The anchors one appraisal may end a chain at, by purpose."""

    anchors: tuple[Anchor, ...]

    def for_purpose(self, purpose: RootPurpose) -> list[Anchor]:
        return [a for a in self.anchors if a.purpose is purpose]

    @classmethod
    def build(
        cls,
        builtin: Iterable[BuiltinRoot] = tuple(BuiltinRoot),
        extra: Iterable[Anchor] = (),
        allow_simulated: bool = False,
    ) -> TrustStore:
        """Built-in roots plus explicitly listed extras; simulated roots only when allowed."""
        anchors = [builtin_anchor(root) for root in builtin]
        for anchor in extra:
            simulated = is_simulated(anchor.cert)
            if simulated and not allow_simulated:
                continue
            anchors.append(Anchor(anchor.name, anchor.purpose, anchor.cert, simulated))
        return cls(tuple(anchors))


def default_trust() -> TrustStore:
    return TrustStore.build()
