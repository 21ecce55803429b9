"""Pure decisions of a node's attestation lifecycle: which nodes are TEE nodes, when to challenge,
when a verdict lapses, and what labels and taints follow from the verdict.

The AttestedNode controller only reads the cluster, calls these, and applies what they return.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from cocoon.api.attestednode import AttestedNodeStatus, Challenge, Verdict
from cocoon.api.inferencepool import TeeType
from cocoon.attestation.evidence import NodeEvidence
from cocoon.attestation.verdict import Failure, Tee
from cocoon.placement.labels import (
    ATTESTED_LABEL,
    GPU_CC_LABEL,
    GPU_RESOURCE,
    NFD_SNP_LABEL,
    NFD_TDX_LABEL,
    TEE_LABEL,
    UNATTESTED_TAINT,
)

NO_SCHEDULE = "NoSchedule"
NO_EXECUTE = "NoExecute"


def tee_of(labels: Mapping[str, str]) -> TeeType | None:
    """Our label wins; otherwise Node Feature Discovery's CPU security labels."""
    declared = labels.get(TEE_LABEL)
    if declared in {t.value for t in TeeType}:
        return TeeType(declared)
    if labels.get(NFD_TDX_LABEL) == "true":
        return TeeType.TDX
    if labels.get(NFD_SNP_LABEL) == "true":
        return TeeType.SEV_SNP
    return None


_EVIDENCE_TEE = {TeeType.TDX: Tee.TDX, TeeType.SEV_SNP: Tee.SNP}


def tee_mismatch(declared: TeeType, presented: Tee) -> Failure | None:
    """A node that declares one TEE must prove that one: SNP evidence cannot attest a TDX node."""
    if _EVIDENCE_TEE[declared] is presented:
        return None
    return Failure(
        "TeeMismatch",
        f"the node declares {declared.value} but sent {presented.value} evidence; fix the "
        "node's cocoon.dev/tee label or the agent's evidence source",
    )


def node_refusal(declared: TeeType, expected_gpus: int, evidence: NodeEvidence) -> Failure | None:
    """Node-level checks the evidence must pass besides appraisal: the right TEE, and exactly
    one evidence per GPU the node declares (distinctness is appraisal's `duplicate_gpus`)."""
    mismatch = tee_mismatch(declared, evidence.cpu.tee)
    if mismatch is not None:
        return mismatch
    sent = len(evidence.gpus)
    if sent < expected_gpus:
        return Failure(
            "GpuEvidenceMissing",
            f"the node has {expected_gpus} GPUs but sent evidence for {sent}; "
            "every GPU must be attested (confidential computing mode on every GPU)",
        )
    if sent > expected_gpus:
        return Failure(
            "TooManyGpuEvidences",
            f"the node has {expected_gpus} GPUs but sent evidence for {sent}: evidence for a "
            "GPU the node does not have is refused; send one evidence per GPU of this node",
        )
    return None


def gpu_count(node: Mapping[str, Any]) -> int:
    capacity = (node.get("status") or {}).get("capacity") or {}
    try:
        return int(capacity.get(GPU_RESOURCE, 0))
    except (TypeError, ValueError):
        return 0


class ChallengeReason(StrEnum):
    FIRST = "FirstChallenge"
    UNANSWERED = "ChallengeExpired"
    REATTEST = "ReattestationDue"
    LAPSED = "VerdictLapsed"
    RETRY = "RetryAfterRejection"


RETRY_AFTER_REJECTION_SECONDS = 30


def challenge_due(
    status: AttestedNodeStatus,
    now: datetime,
    reattest_interval: int,
    retry_after: int = RETRY_AFTER_REJECTION_SECONDS,
) -> ChallengeReason | None:
    """Whether to issue a fresh nonce now (at most one outstanding challenge at a time).

    A rejected node is challenged again only after `retry_after`, so an agent that keeps
    sending bad evidence cannot keep the operator busy."""
    if status.challenge is not None:
        return ChallengeReason.UNANSWERED if now >= status.challenge.expires_at else None
    if status.verdict is Verdict.PENDING:
        return ChallengeReason.FIRST
    if status.verdict is Verdict.VERIFIED and status.verified_at is not None:
        if now >= status.verified_at + timedelta(seconds=reattest_interval):
            return ChallengeReason.REATTEST
        return None
    if status.verdict is Verdict.EXPIRED:
        return ChallengeReason.LAPSED
    last = status.appraised_at
    if last is None or now >= last + timedelta(seconds=retry_after):
        return ChallengeReason.RETRY
    return None


def nonce_refusal(challenge: Challenge | None, nonce: bytes, now: datetime) -> Failure | None:
    """Evidence must answer the outstanding challenge, before it expires; a nonce is single-use
    because appraisal clears the challenge, so a replay finds none or a newer one."""
    if challenge is None or challenge.nonce != nonce.hex():
        return Failure(
            "NonceNotCurrent",
            "this nonce is not the node's outstanding challenge (stale or already used); "
            "answer the challenge in the AttestedNode status.",
        )
    if now >= challenge.expires_at:
        return Failure(
            "ChallengeExpired", "the challenge expired; a new one will be issued shortly."
        )
    return None


def lapsed(status: AttestedNodeStatus, now: datetime) -> bool:
    return (
        status.verdict is Verdict.VERIFIED
        and status.expires_at is not None
        and now >= status.expires_at
    )


@dataclass(frozen=True)
class NodeEffects:
    """Labels to set (value) or remove (None), and the full set of our taints."""

    labels: dict[str, str | None]
    taints: tuple[tuple[str, str], ...]  # (key, effect); values are always "true"


def effects(verdict: Verdict, tee: TeeType, gpus_verified: int) -> NodeEffects:
    """Verified nodes are labelled and untainted; a node that has not (yet) verified never takes
    new pods, and one that failed or lapsed evicts what runs there (NoExecute)."""
    if verdict is Verdict.VERIFIED:
        return NodeEffects(
            labels={
                ATTESTED_LABEL: "true",
                TEE_LABEL: tee.value,
                GPU_CC_LABEL: "true" if gpus_verified else None,
            },
            taints=(),
        )
    taints: tuple[tuple[str, str], ...] = ((UNATTESTED_TAINT, NO_SCHEDULE),)
    if verdict in (Verdict.REJECTED, Verdict.EXPIRED):
        taints += ((UNATTESTED_TAINT, NO_EXECUTE),)
    # the node's own TEE declaration (ours or NFD's) is left as it is until it is verified
    return NodeEffects(labels={ATTESTED_LABEL: None, GPU_CC_LABEL: None}, taints=taints)


def released() -> NodeEffects:
    """A node that no longer declares a TEE: our labels and taints go; its own labels stay."""
    return NodeEffects(labels={ATTESTED_LABEL: None, GPU_CC_LABEL: None}, taints=())


def merged_taints(
    existing: Sequence[Mapping[str, Any]], ours: Sequence[tuple[str, str]]
) -> list[dict[str, Any]] | None:
    """The node's taint list with ours replaced; None when nothing would change."""
    others = [dict(t) for t in existing if t.get("key") != UNATTESTED_TAINT]
    current = sorted(
        (str(t.get("key")), str(t.get("effect")))
        for t in existing
        if t.get("key") == UNATTESTED_TAINT
    )
    if current == sorted(ours):
        return None
    return others + [{"key": key, "value": "true", "effect": effect} for key, effect in ours]


def label_patch(
    existing: Mapping[str, str], wanted: Mapping[str, str | None]
) -> dict[str, str | None]:
    """A merge patch for metadata.labels with only the changes (None deletes)."""
    return {
        key: value
        for key, value in wanted.items()
        if existing.get(key) != value and not (value is None and key not in existing)
    }
