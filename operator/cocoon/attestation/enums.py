"""Closed vocabularies shared by the library and the AttestationPolicy CRD (one definition each)."""

from __future__ import annotations

from enum import StrEnum


class Revocation(StrEnum):
    """What to do when no fresh revocation information (CRL) covers a certificate."""

    REQUIRE_FRESH_CRL = "RequireFreshCrl"
    ACCEPT_UNKNOWN = "AcceptUnknown"


class TdxTcbStatus(StrEnum):
    """Intel TCB statuses as dcap-qvl reports them."""

    UP_TO_DATE = "UpToDate"
    SW_HARDENING_NEEDED = "SWHardeningNeeded"
    CONFIGURATION_NEEDED = "ConfigurationNeeded"
    CONFIGURATION_AND_SW_HARDENING_NEEDED = "ConfigurationAndSWHardeningNeeded"
    OUT_OF_DATE = "OutOfDate"
    OUT_OF_DATE_CONFIGURATION_NEEDED = "OutOfDateConfigurationNeeded"
    REVOKED = "Revoked"


class GpuCcMode(StrEnum):
    """The GPU's confidential-computing mode as its signed evidence states it (NVIDIA's opaque
    FEATURE_FLAG: 0 single-GPU passthrough, 1 multi-GPU passthrough, 2 protected PCIe)."""

    SINGLE_GPU_PASSTHROUGH = "SingleGpuPassthrough"
    MULTI_GPU_PASSTHROUGH = "MultiGpuPassthrough"
    PROTECTED_PCIE = "ProtectedPcie"


class RootPurpose(StrEnum):
    """Which chain a trust anchor may terminate."""

    INTEL_SGX = "IntelSgx"
    AMD_ARK = "AmdArk"
    NVIDIA_DEVICE_IDENTITY = "NvidiaDeviceIdentity"
    NVIDIA_RIM_SIGNING = "NvidiaRimSigning"


class BuiltinRoot(StrEnum):
    """Vendor roots shipped inside the package, each pinned by the SHA-256 of its DER."""

    INTEL_SGX_ROOT_CA = "IntelSgxRootCa"
    AMD_ARK_MILAN = "AmdArkMilan"
    AMD_ARK_GENOA = "AmdArkGenoa"
    AMD_ARK_TURIN = "AmdArkTurin"
    NVIDIA_DEVICE_IDENTITY_CA = "NvidiaDeviceIdentityCa"
    NVIDIA_CORIM_SIGNING_ROOT_CA = "NvidiaCorimSigningRootCa"
