"""The GPU's CC mode is read from its signed evidence; the policy can require one."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from attestation_vectors import GPU_550_AT, read

from cocoon.agent.simulated import SimulatedTee
from cocoon.attestation import appraisal, encoding, nvgpu
from cocoon.attestation.policy import Policy
from cocoon.attestation.verdict import Rejected

NOW = 1766000000
SIM = SimulatedTee.generate(now=datetime.fromtimestamp(NOW, UTC))


def _appraise(cc_mode: int | None, **gpu: object) -> tuple[str | None, object]:
    policy = Policy.from_spec(SIM.policy_spec(gpu=gpu))
    report = SIM.gpu_report(bytes(32), cc_mode=cc_mode)
    result = appraisal.appraise_gpu(report, SIM.gpu_certificates(), policy, now=NOW)
    return result.reason, result.claims.get("ccMode")


@pytest.mark.parametrize(
    ("flag", "allowed", "reason", "claim"),
    [
        (None, [], None, "Unreported"),
        (0, [], None, "SingleGpuPassthrough"),
        (1, [], None, "MultiGpuPassthrough"),
        (2, [], None, "ProtectedPcie"),
        (1, ["MultiGpuPassthrough"], None, "MultiGpuPassthrough"),
        (0, ["SingleGpuPassthrough", "MultiGpuPassthrough"], None, "SingleGpuPassthrough"),
        (2, ["MultiGpuPassthrough"], "GpuModeNotAllowed", "ProtectedPcie"),
        (0, ["MultiGpuPassthrough"], "GpuModeNotAllowed", "SingleGpuPassthrough"),
        (None, ["MultiGpuPassthrough"], "GpuModeUnreported", "Unreported"),
    ],
)
def test_mode_against_policy(
    flag: int | None, allowed: list[str], reason: str | None, claim: str
) -> None:
    assert _appraise(flag, allowedModes=allowed) == (reason, claim)


def test_unknown_mode_is_malformed() -> None:
    with pytest.raises(Rejected) as exc:
        nvgpu.parse(SIM.gpu_report(bytes(32), cc_mode=7))
    assert exc.value.failure.reason == "MalformedEvidence"
    assert "feature flag" in exc.value.failure.message


def test_real_hopper_evidence_predates_the_flag() -> None:
    report = encoding.decode_blob(read("nvgpu/h100_550_report.hex"))
    chain = read("nvgpu/h100_550_chain.pem")
    result = appraisal.appraise_gpu(report, chain, Policy.default(), now=GPU_550_AT)
    assert (result.reason, result.claims["ccMode"]) == (None, "Unreported")
