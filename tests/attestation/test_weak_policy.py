"""A policy that accepts any measurement says so: a condition, a Warning Event, a column."""

from __future__ import annotations

from typing import Any

import pytest

from cocoon.api.attestationpolicy import AttestationPolicySpec
from cocoon.api.common import ConditionStatus
from cocoon.api.resources import ATTESTATION_POLICY
from cocoon.attestation.policy import measurement_condition, unpinned_measurements
from cocoon.controllers import status
from cocoon.kube import ATTESTATION_POLICIES
from tests.payments.fakekube import FakeKube

M = "ab" * 48
PINNED = {"tdx": {"mrTd": [M]}, "snp": {"measurements": [M]}, "gpu": {"requireRims": True}}


@pytest.mark.parametrize(
    ("spec", "weak"),
    [
        ({}, ["TDX", "SEV-SNP", "GPU"]),
        (PINNED, []),
        ({**PINNED, "tdx": {}}, ["TDX"]),
        ({**PINNED, "tdx": {}, "allowedTees": ["sev-snp"]}, []),  # TDX not allowed at all
        ({**PINNED, "snp": {}}, ["SEV-SNP"]),
        ({**PINNED, "tdx": {"rtmr0": [M]}}, ["TDX"]),  # RTMRs without MRTD: firmware unpinned
        ({**PINNED, "gpu": {}}, ["GPU"]),
        ({**PINNED, "gpu": {"required": False}}, []),
    ],
)
def test_unpinned_measurements(spec: dict[str, Any], weak: list[str]) -> None:
    found = unpinned_measurements(AttestationPolicySpec.model_validate(spec))
    assert [w.split(":")[0] for w in found] == weak
    condition = measurement_condition(AttestationPolicySpec.model_validate(spec))
    assert condition[0] == "AnyMeasurementAccepted"
    assert condition[1] is (ConditionStatus.TRUE if weak else ConditionStatus.FALSE)


async def test_weak_policy_gets_a_warning_event_and_a_column() -> None:
    kube = FakeKube()
    body = kube.put(
        ATTESTATION_POLICIES,
        {"apiVersion": "cocoon.dev/v1alpha1", "kind": "AttestationPolicy",
         "metadata": {"name": "default"}, "spec": {}},
    )  # fmt: skip
    updates = [
        ("Ready", ConditionStatus.TRUE, "Valid", "ok"),
        measurement_condition(AttestationPolicySpec()),
    ]
    await status.write(kube, ATTESTATION_POLICIES, body, {}, updates)  # type: ignore[arg-type]
    events = {e["reason"]: e["type"] for e in kube.events}
    assert events == {"Valid": "Normal", "ReferenceValuesMissing": "Warning"}
    body = await kube.get(ATTESTATION_POLICIES, "default")
    await status.write(kube, ATTESTATION_POLICIES, body, {}, updates)  # type: ignore[arg-type]
    assert len(kube.events) == 2  # no transition, no new Event
    pinned = AttestationPolicySpec.model_validate(PINNED)
    await status.write(kube, ATTESTATION_POLICIES, body, {}, [measurement_condition(pinned)])  # type: ignore[arg-type]
    assert kube.events[-1]["reason"] == "MeasurementsPinned"
    assert kube.events[-1]["type"] == "Normal"
    columns = {c.name: c.json_path for c in ATTESTATION_POLICY.columns}
    assert "AnyMeasurementAccepted" in columns["AnyMeasurement"]
