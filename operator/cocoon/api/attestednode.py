"""AttestedNode: the attestation state of one Node, written only by the operator."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from cocoon.api.common import ApiModel, ConditionList
from cocoon.api.inferencepool import TeeType

HEX = r"^[0-9a-f]*$"


class Verdict(StrEnum):
    PENDING = "Pending"
    VERIFIED = "Verified"
    REJECTED = "Rejected"
    EXPIRED = "Expired"


class AttestedNodeSpec(ApiModel):
    """What the operator expects of the node; created by the operator on TEE discovery."""

    node_name: str = Field(
        description="The Node this resource attests (also its owner).", min_length=1
    )
    tee: TeeType = Field(description="The CPU TEE the node declares.")
    policy_name: str = Field(
        default="default", min_length=1, description="The AttestationPolicy that judges this node."
    )
    expected_gpus: int = Field(
        default=0, ge=0, le=64, description="GPUs whose evidence must be presented (from capacity)."
    )


class Challenge(ApiModel):
    """A fresh nonce for the agent; kept in status so an operator restart loses nothing."""

    nonce: str = Field(description="32 random bytes, hex.", pattern=r"^[0-9a-f]{64}$")
    issued_at: datetime = Field(description="When the nonce was issued.")
    expires_at: datetime = Field(description="Evidence bound to this nonce is refused after this.")


class DeviceStatus(StrEnum):
    AFFIRMING = "affirming"
    WARNING = "warning"
    CONTRAINDICATED = "contraindicated"
    NONE = "none"


class DeviceResult(ApiModel):
    """One submodule of the result, EAR style: cpu0, gpu0..N."""

    id: str = Field(description="cpu0, gpu0, gpu1, ...", pattern=r"^(cpu|gpu)[0-9]+$")
    kind: str = Field(description="tdx, snp or nvgpu.", pattern=r"^(tdx|snp|nvgpu)$")
    status: DeviceStatus = Field(description="EAR-style trust tier of this device.")
    reason: str = Field(default="", description="CamelCase reason when not affirming.")
    message: str = Field(default="", description="What is wrong and what to do.")
    tcb_status: str = Field(default="", description="Vendor TCB status (e.g. UpToDate).")
    measurement: str = Field(default="", pattern=HEX, description="Main launch measurement, hex.")


class AttestedNodeStatus(ApiModel):
    """Observed attestation state."""

    observed_generation: int = Field(default=0, ge=0, description="Generation last reconciled.")
    verdict: Verdict = Field(default=Verdict.PENDING, description="The current verdict.")
    challenge: Challenge | None = Field(default=None, description="The outstanding challenge.")
    devices: list[DeviceResult] = Field(default_factory=list, description="Per-device results.")
    tcb_status: str = Field(default="", description="The CPU TEE's TCB status.")
    measurements_digest: str = Field(
        default="", pattern=HEX, description="SHA-256 over all verified measurements, hex."
    )
    workload_public_key: str = Field(
        default="",
        pattern=r"^([0-9a-f]{64})?$",
        description="Ed25519 key bound into the evidence; the node's meters sign with it.",
    )
    policy: str = Field(default="", description="The AttestationPolicy (and generation) applied.")
    verified_at: datetime | None = Field(default=None, description="When evidence last verified.")
    appraised_at: datetime | None = Field(
        default=None, description="When evidence was last appraised, verified or not."
    )
    expires_at: datetime | None = Field(default=None, description="When the verdict lapses.")
    attestation_token: str = Field(
        default="", description="Signed EAR-style JWT of this verdict, served to callers."
    )
    conditions: ConditionList
