"""Simulated-TEE evidence passes the real verifier only under a policy naming its root."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

from cocoon import keys
from cocoon.agent.simulated import SimulatedTee
from cocoon.attestation import appraisal
from cocoon.attestation.evidence import NodeEvidence
from cocoon.attestation.policy import Policy, PolicyError
from cocoon.attestation.verdict import Verdict

NOW = 1766000000
SIM = SimulatedTee.generate(now=datetime.fromtimestamp(NOW, UTC))
TRUSTING = Policy.from_spec(SIM.policy_spec())
NONCE = os.urandom(32)
KEY = keys.public_bytes(keys.generate())


def _appraise(evidence: NodeEvidence, policy: Policy = TRUSTING, **kw: object) -> Verdict:
    args: dict[str, object] = {"now": NOW, "nonce": NONCE, "public_key": KEY, **kw}
    return appraisal.appraise_node(evidence, policy, **args)  # type: ignore[arg-type]


def test_whole_node_verifies_under_trusting_policy() -> None:
    verdict = _appraise(SIM.node_evidence(NONCE, KEY, gpus=8), nonce_issued_at=NOW - 10)
    assert verdict.verified, verdict.message
    assert [d.name for d in verdict.devices] == ["cpu0"] + [f"gpu{i}" for i in range(8)]
    assert verdict.device("cpu0").claims["simulated"] is True
    assert verdict.expires_at == NOW + TRUSTING.verdict_lifetime


def test_default_policy_refuses_simulated_evidence() -> None:
    verdict = _appraise(SIM.node_evidence(NONCE, KEY), Policy.default())
    assert not verdict.verified
    assert {d.reason for d in verdict.devices} == {"UntrustedRoot"}


def test_listing_the_root_without_allow_simulated_is_an_error() -> None:
    spec = SIM.policy_spec()
    spec.trusted_roots.allow_simulated = False
    with pytest.raises(PolicyError, match="allowSimulated"):
        Policy.from_spec(spec)


@pytest.mark.parametrize(
    ("knobs", "reason"),
    [
        ({"debug": True}, "DebugEnabled"),
        ({"tamper": True}, "BadSignature"),
        ({"measurement": bytes(48)}, "MeasurementMismatch"),
    ],
)
def test_bad_evidence_knobs(knobs: dict[str, object], reason: str) -> None:
    policy = Policy.from_spec(
        SIM.policy_spec(snp={"measurements": [SIM.snp_report(bytes(64))[0x90:0xC0].hex()]})
    )
    verdict = _appraise(SIM.node_evidence(NONCE, KEY, **knobs), policy)  # type: ignore[arg-type]
    assert verdict.device("cpu0").reason == reason


def test_wrong_nonce_and_tampered_gpu() -> None:
    verdict = _appraise(SIM.node_evidence(os.urandom(32), KEY, gpus=1))
    assert verdict.device("cpu0").reason == "ReportDataMismatch"
    assert verdict.device("gpu0").reason == "NonceMismatch"
    tampered = SIM.gpu_report(bytes(32), tamper=True)
    result = appraisal.appraise_gpu(tampered, SIM.gpu_certificates(), TRUSTING, now=NOW)
    assert result.reason == "BadSignature"


def test_node_level_checks() -> None:
    too_few = _appraise(SIM.node_evidence(NONCE, KEY, gpus=0))
    assert too_few.reason == "NotEnoughGpus"
    old = _appraise(SIM.node_evidence(NONCE, KEY, gpus=1), nonce_issued_at=NOW - 10_000)
    assert old.reason == "EvidenceTooOld"


def test_gpu_versions_and_wire_form() -> None:
    policy = Policy.from_spec(SIM.policy_spec(gpu={"minDriverVersion": "560.0"}))
    evidence = NodeEvidence.from_dict(SIM.node_evidence(NONCE, KEY, gpus=1).to_dict())
    verdict = _appraise(evidence, policy)
    assert verdict.device("gpu0").reason == "DriverTooOld"
    assert verdict.device("gpu0").claims["vbiosVersion"] == "96.00.9f.00.01"
