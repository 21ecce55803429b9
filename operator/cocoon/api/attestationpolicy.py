"""The cluster-scoped AttestationPolicy (cocoon.dev/v1alpha1): what evidence a node must show.

Only the shape and validation live here; `cocoon.attestation.policy.Policy.from_spec` turns a spec
into the library's policy, so the CRD can evolve without touching the verifiers.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from cocoon.api.common import ApiModel, ConditionList
from cocoon.api.inferencepool import TeeType
from cocoon.attestation.enums import (
    BuiltinRoot,
    GpuCcMode,
    Revocation,
    RootPurpose,
    TdxTcbStatus,
)

GROUP = "cocoon.dev"
VERSION = "v1alpha1"
KIND = "AttestationPolicy"
PLURAL = "attestationpolicies"
SCOPE = "Cluster"

Hex48 = Annotated[
    str,
    Field(pattern=r"^[0-9a-fA-F]{96}$", description="A 48-byte (SHA-384 sized) value in hex."),
]
Sha256Hex = Annotated[
    str, Field(pattern=r"^[0-9a-fA-F]{64}$", description="A SHA-256 digest in hex.")
]
Spl = Annotated[int, Field(ge=0, le=255, description="A security patch level (0-255).")]


class ConfigMapKeyRef(ApiModel):
    """A key of a ConfigMap in the operator's namespace (RIMs and CRLs are too large to inline)."""

    name: str = Field(
        description="ConfigMap name.",
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
    )
    key: str = Field(
        description="Key inside the ConfigMap's data or binaryData.",
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
    )


class TdxCollateral(ApiModel):
    """Where the operator gets Intel's TDX collateral (TCB info, QE identity, CRLs)."""

    pccs_url: str | None = Field(
        default=None,
        max_length=512,
        pattern=r"^https?://[^\s]+$",
        description="A PCCS or Intel PCS base URL (e.g. https://api.trustedservices.intel.com); "
        "default: the chart's attestation.pccsUrl. Fetched collateral is cached in memory and "
        "on disk and refetched before it expires.",
    )
    bundle: ConfigMapKeyRef | None = Field(
        default=None,
        description="Air-gapped clusters: a ConfigMap key holding collateral JSON (one object or "
        "a list, one per platform type); used before any PCCS.",
    )
    refresh_before_expiry_seconds: int = Field(
        default=86400,
        ge=0,
        le=30 * 86400,
        description="Refetch cached collateral this long before its nextUpdate.",
    )


class TdxPolicy(ApiModel):
    """Intel TDX reference values; an empty list accepts any value for that register."""

    mr_td: list[Hex48] = Field(
        default_factory=list,
        description="Accepted MRTD values (the TD firmware build); pin them from a verified quote.",
    )
    rtmr0: list[Hex48] = Field(default_factory=list, description="Accepted RTMR0 values.")
    rtmr1: list[Hex48] = Field(default_factory=list, description="Accepted RTMR1 values.")
    rtmr2: list[Hex48] = Field(default_factory=list, description="Accepted RTMR2 values.")
    rtmr3: list[Hex48] = Field(default_factory=list, description="Accepted RTMR3 values.")
    mr_config_id: list[Hex48] = Field(
        default_factory=list, description="Accepted MRCONFIGID values."
    )
    accepted_tcb_statuses: list[TdxTcbStatus] = Field(
        default_factory=lambda: [TdxTcbStatus.UP_TO_DATE],
        min_length=1,
        description="Intel TCB statuses accepted; anything else is rejected. Revoked is never "
        "accepted whatever is listed.",
    )
    allowed_advisory_ids: list[Annotated[str, Field(pattern=r"^INTEL-SA-[0-9]{5}$")]] = Field(
        default_factory=list,
        description="Intel security advisories a platform may be affected by and still pass.",
    )
    collateral: TdxCollateral = Field(
        default_factory=TdxCollateral, description="Where TDX collateral comes from."
    )


class SnpTcbMinimum(ApiModel):
    """Minimum REPORTED_TCB security patch levels; unset components are not checked."""

    bootloader: Spl | None = Field(default=None, description="Minimum boot loader SPL.")
    tee: Spl | None = Field(default=None, description="Minimum PSP OS (TEE) SPL.")
    snp: Spl | None = Field(default=None, description="Minimum SNP firmware SPL.")
    microcode: Spl | None = Field(default=None, description="Minimum microcode SPL.")
    fmc: Spl | None = Field(default=None, description="Minimum FMC SPL (Turin only).")


class SnpPolicy(ApiModel):
    """AMD SEV-SNP reference values."""

    measurements: list[Hex48] = Field(
        default_factory=list,
        description="Accepted launch MEASUREMENT values (compute with sev-snp-measure); empty "
        "accepts any.",
    )
    min_reported_tcb: SnpTcbMinimum = Field(
        default_factory=SnpTcbMinimum, description="Minimum REPORTED_TCB per component."
    )
    allowed_vmpls: list[Annotated[int, Field(ge=0, le=3)]] = Field(
        default_factory=lambda: [0],
        min_length=1,
        description="VM privilege levels the report may be requested from. Default [0]: the "
        "guest kernel itself asked for it. Add 1 (or 2) for guests under a paravisor or SVSM "
        "(some cloud CVMs), whose software at VMPL 0 is then part of what you trust.",
    )
    kds_url: str | None = Field(
        default=None,
        max_length=512,
        pattern=r"^https?://[^\s]+$",
        description="AMD KDS (https://kdsintf.amd.com) or a mirror: where the operator fetches "
        "the VCEK when an agent sends a report without one; default: the chart's kdsUrl. "
        "Fetched VCEKs are cached.",
    )
    allow_vlek: bool = Field(
        default=True,
        description="Accept reports signed by a cloud provider's VLEK (chained to AMD's ASVK) as "
        "well as by the chip's VCEK.",
    )


class GpuPolicy(ApiModel):
    """NVIDIA confidential-computing GPU requirements."""

    required: bool = Field(
        default=True, description="Whether a node must attest at least minCount GPUs."
    )
    min_count: int = Field(
        default=1, ge=0, le=64, description="Minimum number of verified GPUs when required."
    )
    min_driver_version: str | None = Field(
        default=None,
        pattern=r"^[0-9]+(\.[0-9]+){0,3}$",
        description="Minimum driver version reported by the GPU, e.g. 550.90.07.",
    )
    min_vbios_version: str | None = Field(
        default=None,
        pattern=r"^[0-9a-fA-F]{2}(\.[0-9a-fA-F]{2}){4}$",
        description="Minimum VBIOS version, e.g. 96.00.9f.00.01.",
    )
    rims: list[ConfigMapKeyRef] = Field(
        default_factory=list,
        description="Reference Integrity Manifests (SWID XML from NVIDIA's RIM service), each "
        "in a ConfigMap key; the one matching each GPU's driver and VBIOS is applied.",
    )
    allowed_modes: list[GpuCcMode] = Field(
        default_factory=list,
        description="CC modes a GPU's signed evidence may state (SingleGpuPassthrough, "
        "MultiGpuPassthrough, ProtectedPcie). Empty accepts any, and evidence from firmware too "
        "old to state a mode (reported as Unreported); non-empty rejects such evidence.",
    )
    require_rims: bool = Field(
        default=False,
        description="Reject a GPU unless both its driver and its VBIOS RIM are listed and every "
        "golden measurement matches.",
    )


class ExtraRoot(ApiModel):
    """A root added by the administrator; it must be listed here with its pinned digest."""

    name: str = Field(min_length=1, max_length=63, description="A name for messages and claims.")
    purpose: RootPurpose = Field(description="The only kind of chain this root may terminate.")
    sha256: Sha256Hex = Field(description="SHA-256 of the root's DER; anything else is refused.")
    pem: str | None = Field(
        default=None, max_length=16384, description="The root certificate in PEM, inline."
    )
    config_map_ref: ConfigMapKeyRef | None = Field(
        default=None, description="A ConfigMap key holding the root certificate in PEM."
    )

    @model_validator(mode="after")
    def _one_source(self) -> ExtraRoot:
        if (self.pem is None) == (self.config_map_ref is None):
            raise ValueError("set exactly one of pem and configMapRef")
        return self


class TrustedRoots(ApiModel):
    """Which roots end a valid chain: pinned vendor roots, plus explicitly listed extras."""

    builtin: list[BuiltinRoot] = Field(
        default_factory=lambda: list(BuiltinRoot),
        description="Vendor roots shipped with Cocoon to trust; remove entries to narrow trust.",
    )
    extra_roots: list[ExtraRoot] = Field(
        default_factory=list, description="Additional roots, each pinned by SHA-256."
    )
    allow_simulated: bool = Field(
        default=False,
        description="Trust a simulated-TEE test root listed in extraRoots. For local and e2e "
        "clusters only: simulated evidence proves nothing about hardware.",
    )


class AttestationPolicySpec(ApiModel):
    """What a node must prove before it may serve inference."""

    allowed_tees: list[TeeType] = Field(
        default_factory=lambda: [TeeType.TDX, TeeType.SEV_SNP],
        min_length=1,
        description="CPU TEE technologies accepted.",
    )
    allow_debug: bool = Field(
        default=False,
        description="Accept debug TDs/guests, whose memory the host can read. Never in production.",
    )
    tdx: TdxPolicy = Field(default_factory=TdxPolicy, description="Intel TDX requirements.")
    snp: SnpPolicy = Field(default_factory=SnpPolicy, description="AMD SEV-SNP requirements.")
    gpu: GpuPolicy = Field(default_factory=GpuPolicy, description="NVIDIA GPU requirements.")
    revocation: Revocation = Field(
        default=Revocation.ACCEPT_UNKNOWN,
        description="Without a fresh CRL for a certificate: AcceptUnknown passes it and reports "
        "revocation 'unknown'; RequireFreshCrl rejects it.",
    )
    crls: list[ConfigMapKeyRef] = Field(
        default_factory=list,
        description="CRLs (PEM or DER) from AMD KDS, NVIDIA or other issuers, checked against "
        "every chain.",
    )
    trusted_roots: TrustedRoots = Field(
        default_factory=TrustedRoots, description="Roots that may end a certificate chain."
    )
    max_evidence_age_seconds: int = Field(
        default=300,
        ge=1,
        le=86400,
        description="How long after the challenge nonce was issued evidence is still accepted.",
    )
    reattest_interval_seconds: int = Field(
        default=1800, ge=30, description="How often a verified node is challenged again."
    )
    verdict_lifetime_seconds: int = Field(
        default=3600,
        ge=60,
        description="How long a verdict stays valid; it must outlive the re-attestation interval.",
    )

    @model_validator(mode="after")
    def _lifetime_covers_interval(self) -> AttestationPolicySpec:
        if self.verdict_lifetime_seconds <= self.reattest_interval_seconds:
            raise ValueError(
                "verdictLifetimeSeconds must exceed reattestIntervalSeconds, or verified nodes "
                "lapse before they are re-attested"
            )
        return self


class AttestationPolicyStatus(ApiModel):
    """Whether the policy resolved (its ConfigMaps and roots loaded)."""

    conditions: ConditionList
    observed_generation: int = Field(
        default=0, ge=0, description="The .metadata.generation the status reflects."
    )
