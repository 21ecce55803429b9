"""Our verdict on every public sample agrees with the vendor's (or reference) verifier, except
where we disagree on purpose; MANIFEST.md records each sample, its source and the reason."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from attestation_vectors import DEFAULT, GPU_535_AT, SNP_AT, TDX_AT, TDX_OUTDATED_AT, read

from cocoon.api.attestationpolicy import AttestationPolicySpec
from cocoon.attestation import appraisal, encoding
from cocoon.attestation.policy import Policy


@dataclass(frozen=True)
class Sample:
    name: str
    vendor: str  # the verifier whose verdict we compare with
    vendor_accepts: bool
    ours: str | None  # our reason (None: verified)
    deliberate: str = ""  # why we differ, when we do


NONCE = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"


def _gpu(report: str, chain: str, at: int, nonce: str | None = NONCE) -> str | None:
    result = appraisal.appraise_gpu(
        encoding.decode_blob(read(report)), read(chain), DEFAULT, now=at,
        nonce=bytes.fromhex(nonce) if nonce else None,
    )  # fmt: skip
    return result.reason


def _snp(report: str, vcek: str, policy: Policy = DEFAULT, at: int = SNP_AT) -> str | None:
    raw = encoding.decode_blob(read(report))
    return appraisal.appraise_snp(raw, read(vcek), policy, now=at).reason


VLEK_AT = 1750000000  # trustee's VLEK is valid 2024-12-10..2025-12-10
VMPL_0_1 = Policy.from_spec(AttestationPolicySpec.model_validate({"snp": {"allowedVmpls": [0, 1]}}))
COCO_NONCE = "87d8e24ab336adafe228d49e83d745f6dba4ae505372b6a5704820856b343fec"


def _tdx(quote: str, at: int) -> str | None:
    collateral = read(quote.replace(".bin", ".collateral.json")).decode()
    return appraisal.appraise_tdx(read(quote), collateral, DEFAULT, now=at).reason


CASES = [
    (Sample("b200_575", "NVIDIA attestation-sdk LocalGpuVerifier", True, None),
     lambda: _gpu("nvgpu/b200_575_report.hex", "nvgpu/b200_575_chain.pem", 1766000000)),
    (Sample("h100_535", "NVIDIA attestation-sdk LocalGpuVerifier", True, None),
     lambda: _gpu("nvgpu/h100_535_report.hex", "nvgpu/h100_535_chain.pem", GPU_535_AT, None)),
    (Sample("h100_550", "NVIDIA nvtrust local_gpu_verifier", True, None),
     lambda: _gpu("nvgpu/h100_550_report.hex", "nvgpu/h100_550_chain.pem", 1766000000)),
    (Sample("h100_570 (expired driver RIM)", "NVIDIA attestation-sdk LocalGpuVerifier", True, None),
     lambda: _gpu("nvgpu/h100_570_report.hex", "nvgpu/h100_570_chain.pem", 1766000000)),
    (Sample("h100 invalid signature", "NVIDIA attestation-sdk LocalGpuVerifier", False,
            "BadSignature"),
     lambda: _gpu("nvgpu/h100_invalid_signature_report.hex", "nvgpu/h100_570_chain.pem",
                  1766000000)),
    (Sample("milan (virtee/sev)", "virtee/sev Verifiable", True, None),
     lambda: _snp("snp/milan_report.hex", "snp/milan_vcek.der")),
    (Sample("milan debug (go-sev-guest)", "go-sev-guest verify.SnpAttestation", True,
            "DebugEnabled",
            "go-sev-guest's verify checks authenticity only and leaves the guest policy to its "
            "separate validate step; our verdict includes the debug check (debug guests expose "
            "memory to the host), also in the CLI without --policy"),
     lambda: _snp("snp/milan_debug_report.bin", "snp/milan_debug_vcek.der")),
    (Sample("milan (trustee)", "trustee verifier snp (report signature and TCB)", True, None),
     lambda: _snp("snp/trustee_milan_report.bin", "snp/trustee_milan_vcek.der")),
    (Sample("milan VLEK at VMPL 1 (trustee)", "trustee verifier snp", True, "VmplNotAllowed",
            "trustee verifies the report and leaves VMPL to its policy engine; our default "
            "policy allows VMPL 0 only (the guest kernel asked), a paravisor's VMPL 1 must be "
            "allowed explicitly (allowedVmpls), as the CLI contract says"),
     lambda: _snp("snp/trustee_milan_vlek_vmpl1_report.bin", "snp/trustee_milan_vlek.der",
                  at=VLEK_AT)),
    (Sample("milan VLEK at VMPL 1, allowedVmpls [0, 1] (trustee)", "trustee verifier snp", True,
            None),
     lambda: _snp("snp/trustee_milan_vlek_vmpl1_report.bin", "snp/trustee_milan_vlek.der",
                  VMPL_0_1, VLEK_AT)),
    (Sample("h100 CoCo CI (trustee)", "trustee verifier nvidia (local)", True, None),
     lambda: _gpu("nvgpu/h100_coco_report.hex", "nvgpu/h100_coco_chain.pem", 1766000000,
                  COCO_NONCE)),
    (Sample("tdx_quote (dcap-qvl)", "dcap-qvl verify", True, None),
     lambda: _tdx("tdx/tdx_quote.bin", TDX_AT)),
    (Sample("tdx_quote_outdated (dcap-qvl)", "dcap-qvl verify", False, "NoMatchingTcbLevel"),
     lambda: _tdx("tdx/tdx_quote_outdated.bin", TDX_OUTDATED_AT)),
]  # fmt: skip


@pytest.mark.parametrize(("sample", "run"), CASES, ids=[c[0].name for c in CASES])
def test_verdict_matches_the_vendor(sample: Sample, run: object) -> None:
    ours = run()  # type: ignore[operator]
    assert ours == sample.ours
    agrees = (ours is None) == sample.vendor_accepts
    assert agrees or sample.deliberate, f"{sample.name}: we disagree with {sample.vendor}"
    assert not (agrees and sample.deliberate), "a recorded disagreement that no longer exists"


def test_public_evidence_with_the_cc_feature_flag() -> None:
    """trustee's CoCo CI H100 evidence carries NVIDIA's FEATURE_FLAG: our mode claim reads it,
    and a policy demanding another mode refuses it."""
    report = encoding.decode_blob(read("nvgpu/h100_coco_report.hex"))
    chain, nonce = read("nvgpu/h100_coco_chain.pem"), bytes.fromhex(COCO_NONCE)
    result = appraisal.appraise_gpu(report, chain, DEFAULT, now=1766000000, nonce=nonce)
    assert result.claims["ccMode"] == "SingleGpuPassthrough"
    ppcie = Policy.from_spec(
        AttestationPolicySpec.model_validate({"gpu": {"allowedModes": ["ProtectedPcie"]}})
    )
    refused = appraisal.appraise_gpu(report, chain, ppcie, now=1766000000, nonce=nonce)
    assert refused.reason == "GpuModeNotAllowed"
