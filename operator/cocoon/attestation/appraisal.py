"""Appraisal: authenticity first (a failure stops there), then a chain of small policy checks.

Each check is a pure function `(authentic evidence, policy, expectations) -> Failure | None`;
the tables below decide their order, like cert-manager's readiness policy chains. Every entry
point takes `now` and never raises for bad evidence: it returns a DeviceResult or a Verdict.
GPU checks live in `gpu_appraisal` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Sequence

from cocoon.attestation import binding, snp, tdx
from cocoon.attestation.checks import Check, Expectations, at, result, run_checks
from cocoon.attestation.encoding import load_certificates
from cocoon.attestation.enums import RootPurpose
from cocoon.attestation.evidence import CpuEvidence, NodeEvidence
from cocoon.attestation.gpu_appraisal import (
    GPU_CHECKS,
    GpuSubject,
    RimSet,
    appraise_gpu,
    appraise_gpus,
    duplicate_gpus,
    verify_rims,
)
from cocoon.attestation.policy import Policy
from cocoon.attestation.verdict import DeviceResult, Failure, Rejected, Tee, Verdict, combine

__all__ = [
    "GPU_CHECKS",
    "SNP_CHECKS",
    "TDX_CHECKS",
    "Check",
    "Expectations",
    "GpuSubject",
    "RimSet",
    "appraise_cpu",
    "appraise_gpu",
    "appraise_gpus",
    "appraise_node",
    "appraise_snp",
    "appraise_tdx",
    "duplicate_gpus",
    "run_checks",
    "verify_rims",
]

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


# --- entry points ----------------------------------------------------------------------------


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
        evidence = tdx.verify(
            quote, collateral, now, policy.trust.for_purpose(RootPurpose.INTEL_SGX)
        )
    except Rejected as exc:
        return result(name, Tee.TDX, exc.failure)
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
    if not certificates.strip():
        return result(name, Tee.SNP, Failure(
            "VcekMissing",
            "the report came without a VCEK/VLEK (the host's SNP certificate table is empty) "
            "and none could be fetched: set operator.kdsUrl or the policy's snp.kdsUrl to AMD "
            "KDS (or a mirror), or have the host provide the certificate table",
        ))  # fmt: skip
    try:
        certs = load_certificates(certificates, "VCEK/VLEK")
        extra = load_certificates(chain, "AMD chain") if chain else []
        intermediates = certs[1:] + extra
        evidence = snp.verify(
            report,
            certs[0],
            intermediates or None,
            policy.trust,
            at(now),
            crls=policy.crls,
            revocation=policy.revocation,
        )
    except Rejected as exc:
        return result(name, Tee.SNP, exc.failure)
    failures = run_checks(SNP_CHECKS, evidence, policy, Expectations(report_data=report_data))
    return DeviceResult(name, Tee.SNP, failures, evidence.claims())


def appraise_cpu(
    cpu: CpuEvidence, policy: Policy, *, now: int, report_data: bytes | None
) -> DeviceResult:
    if cpu.tee is Tee.TDX:
        return appraise_tdx(cpu.report, cpu.collateral, policy, now=now, report_data=report_data)
    if cpu.tee is Tee.SNP:
        return appraise_snp(cpu.report, cpu.certificates, policy, now=now, report_data=report_data)
    return result("cpu0", cpu.tee, Failure("TeeNotAllowed", f"{cpu.tee} is not a CPU TEE"))


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
    return appraise_evidence(
        evidence, policy, now=now, report_data=report_data, failures=node_failures
    )


def appraise_evidence(
    evidence: NodeEvidence,
    policy: Policy,
    *,
    now: int,
    report_data: bytes,
    failures: Sequence[Failure] = (),
) -> Verdict:
    """CPU and GPUs made for `report_data` (each GPU's SPDM nonce is its first 32 bytes), every
    GPU a distinct device, enough of them; `failures` are the caller's own (freshness, binding).
    Nodes and meters (`endpoint.appraise`) are appraised by this one function."""
    node_failures = list(failures)
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
                f"the evidence attests {len(evidence.gpus)} GPU(s), the policy requires at "
                f"least {policy.gpu.min_count}: enable confidential computing mode on every GPU",
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
