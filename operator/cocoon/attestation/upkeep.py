"""What one attestation pass does to one node, decided without I/O: lapse the verdict, issue a
challenge, or report a missing policy, and whether anything needs writing at all.

The pass calls this on cached objects first and reads the live object only when something is due,
so API calls per pass grow with the changes, not with the fleet.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cocoon.api.attestationpolicy import AttestationPolicySpec
from cocoon.api.attestednode import AttestedNodeStatus, Challenge, Verdict
from cocoon.api.common import ConditionStatus
from cocoon.attestation import lifecycle

Update = tuple[str, ConditionStatus, str, str]
POLICY_MISSING = "PolicyMissing"
AWAITING_EVIDENCE = "AwaitingEvidence"  # a challenge is out; no verdict yet


@dataclass(frozen=True)
class Plan:
    """Status fields to merge and conditions to set; nothing to write when both are empty."""

    fields: dict[str, Any] = field(default_factory=dict)
    updates: list[Update] = field(default_factory=list)
    verdict: Verdict = Verdict.PENDING

    @property
    def writes(self) -> bool:
        return bool(self.fields or self.updates)


def _ready_reason(status: AttestedNodeStatus) -> str | None:
    return next((c.reason for c in status.conditions if c.type == "Ready"), None)


def plan(
    status: AttestedNodeStatus,
    policy: AttestationPolicySpec | None,
    policy_name: str,
    now: datetime,
    new_nonce: Callable[[], str] = lambda: secrets.token_hex(32),
) -> Plan:
    """The pass's decision for one node. `policy` is None when it is missing or invalid."""
    if policy is None:
        if _ready_reason(status) == POLICY_MISSING:
            return Plan(verdict=status.verdict)  # already said; nothing new to write
        message = (
            f"AttestationPolicy {policy_name} does not exist or is invalid; "
            "create it (kubectl apply -f an AttestationPolicy) to attest nodes."
        )
        return Plan(
            fields={"verdict": status.verdict.value},
            updates=[("Ready", ConditionStatus.FALSE, POLICY_MISSING, message)],
            verdict=status.verdict,
        )
    fields: dict[str, Any] = {}
    updates: list[Update] = []
    if lifecycle.lapsed(status, now):
        status = status.model_copy(update={"verdict": Verdict.EXPIRED})
        fields["verdict"] = Verdict.EXPIRED.value
        updates.append(
            (
                "Ready",
                ConditionStatus.FALSE,
                "VerdictExpired",
                f"No fresh evidence since {status.verified_at}; the verdict lapsed at "
                f"{status.expires_at}. Pods are being evicted. Check that the "
                "cocoon-agent pod on this node runs and reaches the operator.",
            )
        )
    due = lifecycle.challenge_due(status, now, policy.reattest_interval_seconds)
    if due is not None:
        challenge = Challenge(
            nonce=new_nonce(),
            issued_at=now,
            expires_at=now + timedelta(seconds=policy.max_evidence_age_seconds),
        )
        fields["challenge"] = challenge.to_api()
        if status.verdict is Verdict.PENDING:
            updates.append(
                (
                    "Ready",
                    ConditionStatus.FALSE,
                    AWAITING_EVIDENCE,
                    f"Challenge issued ({due}); waiting for the node agent to answer "
                    f"before {challenge.expires_at.isoformat()}.",
                )
            )
    if fields or updates:
        fields = {"verdict": status.verdict.value, **fields}
    return Plan(fields=fields, updates=updates, verdict=status.verdict)
