"""GPU appraisal: each GPU's SPDM evidence authenticated, then the GPU checks (nonce, CC mode,
driver and VBIOS floors, RIMs), and the node-level rule that every GPU is a distinct device."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cocoon.attestation import nvgpu, rim
from cocoon.attestation.checks import Check, Expectations, at, result, run_checks
from cocoon.attestation.encoding import load_certificates
from cocoon.attestation.evidence import GpuEvidence
from cocoon.attestation.policy import Policy, version_tuple
from cocoon.attestation.verdict import DeviceResult, Failure, Rejected, Tee


@dataclass(frozen=True)
class RimSet:
    """RIMs authenticated once per appraisal, and those refused with the version they claimed."""

    verified: tuple[rim.Rim, ...] = ()
    refused: tuple[tuple[str, Failure], ...] = ()


@dataclass(frozen=True)
class GpuSubject:
    """A GPU check's input: the authentic evidence and the RIMs in force."""

    gpu: nvgpu.AuthenticGpu
    rims: RimSet


def gpu_nonce(s: GpuSubject, p: Policy, x: Expectations) -> Failure | None:
    if x.gpu_nonce is None or s.gpu.spdm.nonce == x.gpu_nonce:
        return None
    return Failure(
        "NonceMismatch",
        f"the GPU evidence answers nonce {s.gpu.spdm.nonce.hex()[:16]}…, not this challenge's "
        f"{x.gpu_nonce.hex()[:16]}…: the evidence is stale or replayed",
    )


def gpu_min_driver(s: GpuSubject, p: Policy, x: Expectations) -> Failure | None:
    version = s.gpu.spdm.driver_version
    if p.gpu.min_driver is None or version_tuple(version, 10) >= p.gpu.min_driver:
        return None
    return Failure(
        "DriverTooOld",
        f"GPU driver {version or 'unknown'} is older than the policy minimum "
        f"{'.'.join(map(str, p.gpu.min_driver))}",
    )


def gpu_min_vbios(s: GpuSubject, p: Policy, x: Expectations) -> Failure | None:
    version = s.gpu.spdm.vbios_version
    if p.gpu.min_vbios is None or version_tuple(version, 16) >= p.gpu.min_vbios:
        return None
    return Failure(
        "VbiosTooOld",
        f"GPU VBIOS {version or 'unknown'} is older than the policy minimum",
    )


def gpu_mode(s: GpuSubject, p: Policy, x: Expectations) -> Failure | None:
    if not p.gpu.allowed_modes:
        return None
    mode = s.gpu.spdm.cc_mode
    if mode is None:
        return Failure(
            "GpuModeUnreported",
            f"the GPU's evidence does not state its CC mode (driver {s.gpu.spdm.driver_version} "
            f"predates the flag) and the policy requires one of {sorted(p.gpu.allowed_modes)}: "
            "update the GPU driver/firmware or clear gpu.allowedModes",
        )
    if str(mode) in p.gpu.allowed_modes:
        return None
    return Failure(
        "GpuModeNotAllowed",
        f"the GPU runs in {mode} mode, the policy allows {sorted(p.gpu.allowed_modes)}",
    )


def gpu_rims(s: GpuSubject, p: Policy, x: Expectations) -> Failure | None:
    """Applicable RIMs must match; a refused RIM meant for this firmware rejects the GPU."""
    spdm = s.gpu.spdm
    versions = {spdm.driver_version.lower(), spdm.vbios_version.lower()}
    for claimed, failure in s.rims.refused:
        if claimed.lower() in versions:
            return failure
    kinds = set()
    for manifest in s.rims.verified:
        if manifest.applies_to(spdm.driver_version, spdm.vbios_version):
            kinds.add(manifest.kind)
            mismatch = rim.compare(spdm.measurements, manifest)
            if mismatch is not None:
                return mismatch
    missing = {"driver", "vbios"} - kinds
    if p.gpu.require_rims and missing:
        return Failure(
            "RimMissing",
            f"no verified {' and '.join(sorted(missing))} RIM for driver {spdm.driver_version} "
            f"/ VBIOS {spdm.vbios_version}: add them to the policy's gpu.rims",
        )
    return None


GPU_CHECKS: tuple[Check[GpuSubject], ...] = (
    gpu_nonce,
    gpu_mode,
    gpu_min_driver,
    gpu_min_vbios,
    gpu_rims,
)


def verify_rims(documents: Sequence[bytes], policy: Policy, now: int) -> RimSet:
    """Authenticate RIMs (normally the policy's) once for an appraisal."""
    verified, refused = [], []
    for data in documents:
        try:
            verified.append(
                rim.verify_cached(
                    data, policy.trust, at(now), crls=policy.crls, revocation=policy.revocation
                )
            )
        except Rejected as exc:
            refused.append((rim.claimed_version(data), exc.failure))
    return RimSet(tuple(verified), tuple(refused))


def appraise_gpu(
    report: bytes,
    certificates: bytes,
    policy: Policy,
    *,
    now: int,
    nonce: bytes | None = None,
    rims: RimSet | None = None,
    name: str = "gpu0",
) -> DeviceResult:
    try:
        evidence = nvgpu.verify(
            report,
            load_certificates(certificates, "GPU certificate chain"),
            policy.trust,
            at(now),
            crls=policy.crls,
            revocation=policy.revocation,
        )
    except Rejected as exc:
        return result(name, Tee.NVGPU, exc.failure)
    rims = rims if rims is not None else verify_rims(policy.gpu.rims, policy, now)
    subject = GpuSubject(evidence, rims)
    failures = run_checks(GPU_CHECKS, subject, policy, Expectations(gpu_nonce=nonce))
    claims = evidence.claims()
    claims["rims"] = [
        f"{m.kind} {m.version}"
        for m in subject.rims.verified
        if m.applies_to(evidence.spdm.driver_version, evidence.spdm.vbios_version)
    ]
    return DeviceResult(name, Tee.NVGPU, failures, claims)


def appraise_gpus(
    gpus: Sequence[GpuEvidence], policy: Policy, *, now: int, nonce: bytes | None
) -> list[DeviceResult]:
    rims = verify_rims(policy.gpu.rims, policy, now)
    return [
        appraise_gpu(
            g.report, g.certificates, policy, now=now, nonce=nonce, rims=rims, name=f"gpu{i}"
        )
        for i, g in enumerate(gpus)
    ]


def duplicate_gpus(gpus: Sequence[DeviceResult]) -> Failure | None:
    """Every GPU must be its own device: one GPU's evidence sent twice must not count as two.

    Identity is the attestation key and, where the chain names it, the device ID; only
    authentic GPUs carry them (the others are already rejected)."""
    seen: dict[str, str] = {}
    for device in gpus:
        for kind in ("deviceKey", "deviceId"):
            value = device.claims.get(kind)
            if not isinstance(value, str) or not value:
                continue
            first = seen.setdefault(f"{kind}:{value}", device.name)
            if first != device.name:
                label = "attestation key" if kind == "deviceKey" else "device ID"
                return Failure(
                    "DuplicateGpu",
                    f"{device.name} has the same {label} ({value[:16]}) as {first}: the same "
                    "GPU's evidence was sent more than once; send one evidence per physical GPU",
                )
    return None
