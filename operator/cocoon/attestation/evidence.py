"""What a node submits: CPU evidence plus one entry per GPU, as bytes, with a JSON wire form.

Kept apart from the verifiers so the agent, the simulated TEE and the controller share one shape.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from cocoon.attestation.encoding import MALFORMED
from cocoon.attestation.verdict import Rejected, Tee


@dataclass(frozen=True)
class CpuEvidence:
    """A TDX quote (+ collateral JSON) or an SNP report (+ VCEK/VLEK, optionally its chain)."""

    tee: Tee
    report: bytes
    certificates: bytes = b""
    collateral: str | None = None


@dataclass(frozen=True)
class GpuEvidence:
    """SPDM GET_MEASUREMENTS request+response and the device certificate chain (PEM, leaf first)."""

    report: bytes
    certificates: bytes
    arch: str = "HOPPER"


@dataclass(frozen=True)
class NodeEvidence:
    cpu: CpuEvidence
    gpus: tuple[GpuEvidence, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, object]:
        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode()

        return {
            "cpu": {
                "tee": str(self.cpu.tee),
                "report": b64(self.cpu.report),
                "certificates": b64(self.cpu.certificates),
                "collateral": self.cpu.collateral,
            },
            "gpus": [
                {"arch": g.arch, "report": b64(g.report), "certificates": b64(g.certificates)}
                for g in self.gpus
            ],
        }

    @classmethod
    def from_dict(cls, data: object) -> NodeEvidence:
        """Parse the wire form; anything malformed is a rejection, not an exception."""
        try:
            if not isinstance(data, dict):
                raise TypeError("node evidence must be an object")
            cpu = data["cpu"]
            gpus = data.get("gpus", [])
            if not isinstance(cpu, dict) or not isinstance(gpus, list):
                raise TypeError("cpu must be an object and gpus a list")
            collateral = cpu.get("collateral")
            return cls(
                CpuEvidence(
                    Tee(cpu["tee"]),
                    base64.b64decode(cpu["report"], validate=True),
                    base64.b64decode(cpu.get("certificates", ""), validate=True),
                    str(collateral) if collateral is not None else None,
                ),
                tuple(
                    GpuEvidence(
                        base64.b64decode(g["report"], validate=True),
                        base64.b64decode(g["certificates"], validate=True),
                        str(g.get("arch", "HOPPER")),
                    )
                    for g in gpus
                ),
            )
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise Rejected(
                MALFORMED, f"node evidence is not in the expected form: {exc!r}"
            ) from None
