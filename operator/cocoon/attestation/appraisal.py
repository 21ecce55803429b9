"""Appraisal: authenticity first (a failure stops there), then a chain of small policy checks.

Each check is a pure function `(authentic evidence, policy, expectations) -> Failure | None`;
the tables below decide their order, like cert-manager's readiness policy chains. Every entry
point takes `now` and never raises for bad evidence: it returns a DeviceResult or a Verdict.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from cocoon.attestation import binding, nvgpu, rim, snp, tdx
from cocoon.attestation.encoding import load_certificates
from cocoon.attestation.evidence import CpuEvidence, GpuEvidence, NodeEvidence
from cocoon.attestation.policy import Policy, version_tuple
from cocoon.attestation.verdict import DeviceResult, Failure, Rejected, Tee, Verdict, combine

E = TypeVar("E")


@dataclass(frozen=True)
class Expectations:
    """What this appraisal's challenge requires: CPU report_data, GPU nonce (None: unchecked)."""

    report_data: bytes | None = None
    gpu_nonce: bytes | None = None


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


Check = Callable[[E, Policy, Expectations], Failure | None]


def run_checks(
    checks: Sequence[Check[E]], subject: E, policy: Policy, expect: Expectations
) -> tuple[Failure, ...]:
    return tuple(f for check in checks if (f := check(subject, policy, expect)) is not None)


def _at(now: int) -> datetime:
    return datetime.fromtimestamp(now, UTC)


# --- TDX -------------------------------------------------------------------------------------


def tdx_allowed(e: tdx.AuthenticTdx, p: Policy, x: Expectations) -> Failure | None:
    if Tee.TDX in p.allowed_cpu:
        return None
    return Failure("TeeNotAllowed", "the policy does not accept Intel TDX nodes")


def tdx_not_debug(e: tdx.AuthenticTdx, p: Policy, x: Expectations) -> Failure | None:
    if not e.debug or p.allow_debug:
        return None
    return Failure(
        "DebugEnabled",
        "the TD has the DEBUG attribute set, so the host can read its memory: launch it "
        "without debug",
    )


def tdx_tcb_status(e: tdx.AuthenticTdx, p: Policy, x: Expectations) -> Failure | None:
    if e.tcb_status in p.tdx.accepted_statuses:
        return None
    return Failure(
        "TcbStatusNotAccepted",
        f"Intel TCB status {e.tcb_status} is not among the accepted "
        f"{sorted(p.tdx.accepted_statuses)}: update the platform or widen the policy",
    )


def tdx_advisories(e: tdx.AuthenticTdx, p: Policy, x: Expectations) -> Failure | None:
    extra = sorted(set(e.advisory_ids) - p.tdx.allowed_advisories)
    if not extra:
        return None
    return Failure(
        "AdvisoryNotAllowed",
        f"the platform is affected by {', '.join(extra)}, not allowed by the policy",
    )


def _reference(name: str, value: bytes, accepted: frozenset[bytes]) -> Failure | None:
    if not accepted or value in accepted:
        return None
    return Failure(
        f"{name}Mismatch",
        f"{name} {value.hex()[:24]}… is not a reference value of the policy: the firmware or "
        "software stack differs from the one approved",
    )


def tdx_mr_td(e: tdx.AuthenticTdx, p: Policy, x: Expectations) -> Failure | None:
    return _reference("MrTd", e.mr_td, p.tdx.mr_td)


def tdx_rtmrs(e: tdx.AuthenticTdx, p: Policy, x: Expectations) -> Failure | None:
    for index, (value, accepted) in enumerate(zip(e.rtmrs, p.tdx.rtmrs, strict=True)):
        failure = _reference(f"Rtmr{index}", value, accepted)
        if failure is not None:
            return failure
    return None


def tdx_mr_config_id(e: tdx.AuthenticTdx, p: Policy, x: Expectations) -> Failure | None:
    return _reference("MrConfigId", e.mr_config_id, p.tdx.mr_config_id)


def _report_data(actual: bytes, expected: bytes | None) -> Failure | None:
    if expected is None or actual == expected:
        return None
    return Failure(
        "ReportDataMismatch",
        "report_data does not equal SHA-512(nonce || workload public key) for this challenge: "
        "the evidence is stale, replayed or made for another key",
    )


def tdx_report_data(e: tdx.AuthenticTdx, p: Policy, x: Expectations) -> Failure | None:
    return _report_data(e.report_data, x.report_data)


TDX_CHECKS: tuple[Check[tdx.AuthenticTdx], ...] = (
    tdx_allowed,
    tdx_not_debug,
    tdx_tcb_status,
    tdx_advisories,
    tdx_mr_td,
    tdx_rtmrs,
    tdx_mr_config_id,
    tdx_report_data,
)


# --- SEV-SNP ---------------------------------------------------------------------------------


def snp_allowed(e: snp.AuthenticSnp, p: Policy, x: Expectations) -> Failure | None:
    if Tee.SNP in p.allowed_cpu:
        return None
    return Failure("TeeNotAllowed", "the policy does not accept AMD SEV-SNP nodes")


def snp_not_debug(e: snp.AuthenticSnp, p: Policy, x: Expectations) -> Failure | None:
    if not e.report.debug or p.allow_debug:
        return None
    return Failure(
        "DebugEnabled",
        f"the guest policy {e.report.policy:#x} allows DEBUG, so the host can read guest "
        "memory: launch the guest without debug",
    )


def snp_signing_key(e: snp.AuthenticSnp, p: Policy, x: Expectations) -> Failure | None:
    if e.signing_key == "vcek" or p.snp.allow_vlek:
        return None
    return Failure("VlekNotAllowed", "the report is signed by a VLEK and the policy wants a VCEK")


def snp_vmpl(e: snp.AuthenticSnp, p: Policy, x: Expectations) -> Failure | None:
    if e.report.vmpl in p.snp.allowed_vmpls:
        return None
    return Failure(
        "VmplNotAllowed",
        f"the report was requested at VMPL {e.report.vmpl}, allowed {sorted(p.snp.allowed_vmpls)}",
    )


def snp_measurement(e: snp.AuthenticSnp, p: Policy, x: Expectations) -> Failure | None:
    return _reference("Measurement", e.report.measurement, p.snp.measurements)


def snp_min_tcb(e: snp.AuthenticSnp, p: Policy, x: Expectations) -> Failure | None:
    actual = e.reported_tcb.components()
    for name, minimum in sorted(p.snp.min_tcb.items()):
        value = actual.get(name)
        if value is not None and value < minimum:
            return Failure(
                "TcbTooOld",
                f"reported {name} SPL {value} is below the policy minimum {minimum}: update "
                "the host firmware",
            )
    return None


def snp_report_data(e: snp.AuthenticSnp, p: Policy, x: Expectations) -> Failure | None:
    return _report_data(e.report.report_data, x.report_data)


SNP_CHECKS: tuple[Check[snp.AuthenticSnp], ...] = (
    snp_allowed,
    snp_not_debug,
    snp_signing_key,
    snp_vmpl,
    snp_measurement,
    snp_min_tcb,
    snp_report_data,
)


# --- NVIDIA GPU ------------------------------------------------------------------------------


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


# --- entry points ----------------------------------------------------------------------------


def _result(name: str, tee: Tee, failure: Failure) -> DeviceResult:
    return DeviceResult(name, tee, (failure,))


def appraise_tdx(
    quote: bytes,
    collateral: str | None,
    policy: Policy,
    *,
    now: int,
    report_data: bytes | None = None,
    name: str = "cpu0",
) -> DeviceResult:
    try:
        evidence = tdx.verify(quote, collateral, now, policy.trust_intel)
    except Rejected as exc:
        return _result(name, Tee.TDX, exc.failure)
    failures = run_checks(TDX_CHECKS, evidence, policy, Expectations(report_data=report_data))
    return DeviceResult(name, Tee.TDX, failures, evidence.claims())


def appraise_snp(
    report: bytes,
    certificates: bytes,
    policy: Policy,
    *,
    now: int,
    chain: bytes | None = None,
    report_data: bytes | None = None,
    name: str = "cpu0",
) -> DeviceResult:
    """`certificates`: the VCEK/VLEK, optionally followed by its chain (PEM); `chain`: the
    ASK/ASVK (+ARK) if separate; with neither chain, AMD's built-in chain for the product."""
    try:
        certs = load_certificates(certificates, "VCEK/VLEK")
        extra = load_certificates(chain, "AMD chain") if chain else []
        intermediates = certs[1:] + extra
        evidence = snp.verify(
            report,
            certs[0],
            intermediates or None,
            policy.trust,
            _at(now),
            crls=policy.crls,
            revocation=policy.revocation,
        )
    except Rejected as exc:
        return _result(name, Tee.SNP, exc.failure)
    failures = run_checks(SNP_CHECKS, evidence, policy, Expectations(report_data=report_data))
    return DeviceResult(name, Tee.SNP, failures, evidence.claims())


def verify_rims(documents: Sequence[bytes], policy: Policy, now: int) -> RimSet:
    """Authenticate RIMs (normally the policy's) once for an appraisal."""
    verified, refused = [], []
    for data in documents:
        try:
            verified.append(
                rim.verify_cached(
                    data, policy.trust, _at(now), crls=policy.crls, revocation=policy.revocation
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
            _at(now),
            crls=policy.crls,
            revocation=policy.revocation,
        )
    except Rejected as exc:
        return _result(name, Tee.NVGPU, exc.failure)
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


def appraise_cpu(
    cpu: CpuEvidence, policy: Policy, *, now: int, report_data: bytes | None
) -> DeviceResult:
    if cpu.tee is Tee.TDX:
        return appraise_tdx(cpu.report, cpu.collateral, policy, now=now, report_data=report_data)
    if cpu.tee is Tee.SNP:
        return appraise_snp(cpu.report, cpu.certificates, policy, now=now, report_data=report_data)
    return _result("cpu0", cpu.tee, Failure("TeeNotAllowed", f"{cpu.tee} is not a CPU TEE"))


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


def appraise_node(
    evidence: NodeEvidence,
    policy: Policy,
    *,
    now: int,
    nonce: bytes,
    public_key: bytes,
    nonce_issued_at: int | None = None,
) -> Verdict:
    """The whole node: CPU bound to SHA-512(nonce || key), every GPU to its first 32 bytes,
    GPU count, evidence age; the verdict expires at the policy lifetime or collateral expiry."""
    node_failures = []
    if nonce_issued_at is not None and not 0 <= now - nonce_issued_at <= policy.max_evidence_age:
        node_failures.append(
            Failure(
                "EvidenceTooOld",
                f"the challenge was issued at {nonce_issued_at}, {now - nonce_issued_at}s ago; "
                f"evidence is accepted for {policy.max_evidence_age}s: issue a new challenge",
            )
        )
    try:
        report_data = binding.cpu_report_data(nonce, public_key)
    except ValueError as exc:
        report_data = b""
        node_failures.append(Failure("BadChallenge", str(exc)))
    devices = [appraise_cpu(evidence.cpu, policy, now=now, report_data=report_data)]
    gpus = appraise_gpus(
        evidence.gpus, policy, now=now, nonce=report_data[: binding.GPU_NONCE_BYTES]
    )
    devices += gpus
    duplicate = duplicate_gpus(gpus)
    if duplicate is not None:
        node_failures.append(duplicate)
    if policy.gpu.required and len(evidence.gpus) < policy.gpu.min_count:
        node_failures.append(
            Failure(
                "NotEnoughGpus",
                f"the node attested {len(evidence.gpus)} GPU(s), the policy requires at least "
                f"{policy.gpu.min_count}: enable confidential computing mode on every GPU",
            )
        )
    expiry = devices[0].claims.get("collateralExpires")
    return combine(
        devices,
        now=now,
        lifetime=policy.verdict_lifetime,
        node_failures=node_failures,
        not_after=expiry if isinstance(expiry, int) else None,
    )
