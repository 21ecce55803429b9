"""What a pass does to one node, one row per situation; `writes` is what keeps a pass's API
calls proportional to the changes: a settled node costs nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cocoon.api.attestationpolicy import AttestationPolicySpec
from cocoon.api.attestednode import AttestedNodeStatus, Challenge, Verdict
from cocoon.api.common import Condition, ConditionStatus
from cocoon.attestation import upkeep

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
S = timedelta(seconds=1)
POLICY = AttestationPolicySpec.model_validate({"reattestIntervalSeconds": 60})


def status(**fields: object) -> AttestedNodeStatus:
    return AttestedNodeStatus.model_validate(fields)


def ready(reason: str) -> Condition:
    return Condition(
        type="Ready",
        status=ConditionStatus.FALSE,
        reason=reason,
        message="",
        lastTransitionTime=NOW,
    )


OPEN = Challenge(nonce="ab" * 32, issued_at=NOW - 5 * S, expires_at=NOW + 5 * S)
VERIFIED = {"verdict": Verdict.VERIFIED, "verified_at": NOW - 10 * S, "expires_at": NOW + 50 * S}


@pytest.mark.parametrize(
    ("current", "policy", "writes", "verdict", "challenged", "reason"),
    [
        # settled: verified and not yet due, or a challenge outstanding -> no API call at all
        (status(**VERIFIED), POLICY, False, Verdict.VERIFIED, False, None),
        (status(challenge=OPEN), POLICY, False, Verdict.PENDING, False, None),
        # new node: first challenge, Ready says we wait for evidence
        (status(), POLICY, True, Verdict.PENDING, True, "AwaitingEvidence"),
        # re-attestation due: a challenge, the verdict stays Verified
        (
            status(verdict=Verdict.VERIFIED, verified_at=NOW - 61 * S, expires_at=NOW + 9 * S),
            POLICY,
            True,
            Verdict.VERIFIED,
            True,
            None,
        ),
        # lapsed: Expired (pods evicted) and a fresh challenge in the same write
        (
            status(verdict=Verdict.VERIFIED, verified_at=NOW - 90 * S, expires_at=NOW - S),
            POLICY,
            True,
            Verdict.EXPIRED,
            True,
            "VerdictExpired",
        ),
        # no policy: said once, then nothing more to write
        (status(), None, True, Verdict.PENDING, False, "PolicyMissing"),
        (status(conditions=[ready("PolicyMissing")]), None, False, Verdict.PENDING, False, None),
    ],
)
def test_plan(
    current: AttestedNodeStatus,
    policy: AttestationPolicySpec | None,
    writes: bool,
    verdict: Verdict,
    challenged: bool,
    reason: str | None,
) -> None:
    step = upkeep.plan(current, policy, "default", NOW, new_nonce=lambda: "cd" * 32)
    assert step.writes is writes
    assert step.verdict is verdict
    assert ("challenge" in step.fields) is challenged
    if challenged:
        assert step.fields["challenge"]["nonce"] == "cd" * 32
    assert [u[2] for u in step.updates] == ([reason] if reason else [])
    if writes:
        assert step.fields["verdict"] == verdict.value
