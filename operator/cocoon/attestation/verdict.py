"""The attestation result: one submodule per device (cpu0, gpu0..N) and an overall verdict.

Shaped like an EAR (IETF RATS Entity Attestation Result) so that the signed token the operator
issues can carry it unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class Tee(StrEnum):
    TDX = "tdx"
    SNP = "snp"
    NVGPU = "nvgpu"


class Status(StrEnum):
    """EAR trustworthiness tiers we use: only affirming evidence is trusted."""

    AFFIRMING = "affirming"
    CONTRAINDICATED = "contraindicated"


@dataclass(frozen=True)
class Failure:
    """Why evidence was refused: a CamelCase reason and a message saying what to do."""

    reason: str
    message: str


class Rejected(Exception):
    """Raised by parsers and authenticity checks; appraisal turns it into a device result."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.failure = Failure(reason, message)


@dataclass(frozen=True)
class DeviceResult:
    name: str
    tee: Tee
    failures: tuple[Failure, ...]
    claims: Mapping[str, object] = field(default_factory=dict)

    @property
    def status(self) -> Status:
        return Status.CONTRAINDICATED if self.failures else Status.AFFIRMING

    @property
    def reason(self) -> str | None:
        return self.failures[0].reason if self.failures else None

    @property
    def message(self) -> str:
        return "; ".join(f.message for f in self.failures) if self.failures else "verified"

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "tee": str(self.tee),
            "status": str(self.status),
            "reason": self.reason,
            "message": self.message,
            "failures": [{"reason": f.reason, "message": f.message} for f in self.failures],
            "claims": dict(self.claims),
        }


@dataclass(frozen=True)
class Verdict:
    """Verified only when every device is affirming and no node-level check failed."""

    devices: tuple[DeviceResult, ...]
    issued_at: int
    expires_at: int
    node_failures: tuple[Failure, ...] = ()

    @property
    def failures(self) -> tuple[Failure, ...]:
        return self.node_failures + tuple(f for d in self.devices for f in d.failures)

    @property
    def verified(self) -> bool:
        return bool(self.devices) and not self.failures

    @property
    def reason(self) -> str | None:
        failures = self.failures
        if failures:
            return failures[0].reason
        return None if self.devices else "NoEvidence"

    @property
    def message(self) -> str:
        if self.verified:
            return "all devices verified: " + ", ".join(d.name for d in self.devices)
        if not self.devices and not self.node_failures:
            return "no evidence was appraised"
        parts = [f.message for f in self.node_failures]
        parts += [f"{d.name}: {d.message}" for d in self.devices if d.failures]
        return "; ".join(parts)

    def device(self, name: str) -> DeviceResult:
        return next(d for d in self.devices if d.name == name)

    def to_dict(self) -> dict[str, object]:
        return {
            "verified": self.verified,
            "reason": self.reason,
            "message": self.message,
            "issuedAt": self.issued_at,
            "expiresAt": self.expires_at,
            "submods": {d.name: d.to_dict() for d in self.devices},
        }


def combine(
    devices: Sequence[DeviceResult],
    *,
    now: int,
    lifetime: int,
    node_failures: Sequence[Failure] = (),
    not_after: int | None = None,
) -> Verdict:
    """Build the verdict; it expires at the policy lifetime or earlier collateral expiry."""
    expires = now + lifetime if not_after is None else min(now + lifetime, not_after)
    return Verdict(tuple(devices), now, expires, tuple(node_failures))
