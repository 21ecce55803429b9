"""The node attestation lifecycle, one row per situation: discovery, challenges, expiry, effects."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cocoon.api.attestednode import AttestedNodeStatus, Challenge, Verdict
from cocoon.api.inferencepool import TeeType
from cocoon.attestation import lifecycle
from cocoon.attestation.evidence import CpuEvidence, GpuEvidence, NodeEvidence
from cocoon.attestation.lifecycle import ChallengeReason
from cocoon.attestation.verdict import Tee

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
T = timedelta(seconds=1)


@pytest.mark.parametrize(
    ("labels", "tee"),
    [
        ({"cocoon.dev/tee": "tdx"}, TeeType.TDX),
        ({"cocoon.dev/tee": "sev-snp"}, TeeType.SEV_SNP),
        ({"feature.node.kubernetes.io/cpu-security.tdx.protected": "true"}, TeeType.TDX),
        ({"feature.node.kubernetes.io/cpu-security.sev.snp.enabled": "true"}, TeeType.SEV_SNP),
        (
            {
                "cocoon.dev/tee": "sev-snp",
                "feature.node.kubernetes.io/cpu-security.tdx.protected": "true",
            },
            TeeType.SEV_SNP,
        ),
        ({"cocoon.dev/tee": "sgx"}, None),
        ({"feature.node.kubernetes.io/cpu-security.sev.snp.enabled": "false"}, None),
        ({}, None),
    ],
)
def test_discovery(labels: dict[str, str], tee: TeeType | None) -> None:
    assert lifecycle.tee_of(labels) is tee


def status(**kw: object) -> AttestedNodeStatus:
    return AttestedNodeStatus.model_validate(
        {k: v for k, v in kw.items() if v is not None}, by_alias=False, by_name=True
    )


def challenge(issued: datetime, ttl: int = 300) -> Challenge:
    return Challenge(nonce="00" * 32, issued_at=issued, expires_at=issued + ttl * T)


@pytest.mark.parametrize(
    ("case", "st", "due"),
    [
        ("new node", status(), ChallengeReason.FIRST),
        ("outstanding", status(challenge=challenge(NOW - 10 * T)), None),
        ("unanswered", status(challenge=challenge(NOW - 400 * T)), ChallengeReason.UNANSWERED),
        ("fresh verdict", status(verdict=Verdict.VERIFIED, verified_at=NOW - 100 * T), None),
        (
            "re-attest due",
            status(verdict=Verdict.VERIFIED, verified_at=NOW - 1800 * T),
            ChallengeReason.REATTEST,
        ),
        ("lapsed", status(verdict=Verdict.EXPIRED), ChallengeReason.LAPSED),
        ("rejected just now", status(verdict=Verdict.REJECTED, appraised_at=NOW - 5 * T), None),
        (
            "rejected a while ago",
            status(verdict=Verdict.REJECTED, appraised_at=NOW - 31 * T),
            ChallengeReason.RETRY,
        ),
    ],
)
def test_when_to_challenge(case: str, st: AttestedNodeStatus, due: ChallengeReason | None) -> None:
    assert lifecycle.challenge_due(st, NOW, reattest_interval=1800) is due, case


@pytest.mark.parametrize(
    ("st", "lapsed"),
    [
        (status(verdict=Verdict.VERIFIED, expires_at=NOW), True),
        (status(verdict=Verdict.VERIFIED, expires_at=NOW + T), False),
        (status(verdict=Verdict.REJECTED, expires_at=NOW - T), False),
        (status(verdict=Verdict.VERIFIED), False),
    ],
)
def test_lapse(st: AttestedNodeStatus, lapsed: bool) -> None:
    assert lifecycle.lapsed(st, NOW) is lapsed


@pytest.mark.parametrize(
    ("verdict", "gpus", "labels", "taints"),
    [
        (
            Verdict.VERIFIED,
            8,
            {"cocoon.dev/attested": "true", "cocoon.dev/tee": "tdx", "cocoon.dev/gpu-cc": "true"},
            (),
        ),
        (
            Verdict.VERIFIED,
            0,
            {"cocoon.dev/attested": "true", "cocoon.dev/tee": "tdx", "cocoon.dev/gpu-cc": None},
            (),
        ),
        (
            Verdict.PENDING,
            0,
            {"cocoon.dev/attested": None, "cocoon.dev/gpu-cc": None},
            (("cocoon.dev/unattested", "NoSchedule"),),
        ),
        (
            Verdict.REJECTED,
            8,
            {"cocoon.dev/attested": None, "cocoon.dev/gpu-cc": None},
            (("cocoon.dev/unattested", "NoSchedule"), ("cocoon.dev/unattested", "NoExecute")),
        ),
        (
            Verdict.EXPIRED,
            8,
            {"cocoon.dev/attested": None, "cocoon.dev/gpu-cc": None},
            (("cocoon.dev/unattested", "NoSchedule"), ("cocoon.dev/unattested", "NoExecute")),
        ),
    ],
)
def test_effects(
    verdict: Verdict, gpus: int, labels: dict[str, str | None], taints: tuple[tuple[str, str], ...]
) -> None:
    effects = lifecycle.effects(verdict, TeeType.TDX, gpus)
    assert effects.labels == labels
    assert effects.taints == taints


def test_taints_are_merged_without_touching_others() -> None:
    other = {"key": "nvidia.com/gpu", "effect": "NoSchedule", "value": "true"}
    ours = {"key": "cocoon.dev/unattested", "effect": "NoSchedule", "value": "true"}
    assert lifecycle.merged_taints([other, ours], [("cocoon.dev/unattested", "NoSchedule")]) is None
    assert lifecycle.merged_taints([other, ours], []) == [other]
    merged = lifecycle.merged_taints([other], [("cocoon.dev/unattested", "NoExecute")])
    assert merged == [
        other,
        {"key": "cocoon.dev/unattested", "value": "true", "effect": "NoExecute"},
    ]


def test_label_patch_only_changes() -> None:
    existing = {"cocoon.dev/tee": "tdx", "cocoon.dev/attested": "true"}
    wanted = {"cocoon.dev/tee": "tdx", "cocoon.dev/attested": None, "cocoon.dev/gpu-cc": None}
    assert lifecycle.label_patch(existing, wanted) == {"cocoon.dev/attested": None}
    assert lifecycle.label_patch({}, {"cocoon.dev/gpu-cc": None}) == {}


def evidence(tee: Tee, gpus: int) -> NodeEvidence:
    return NodeEvidence(CpuEvidence(tee, b"r"), tuple(GpuEvidence(b"g", b"c") for _ in range(gpus)))


@pytest.mark.parametrize(
    ("declared", "ev", "reason"),
    [
        (TeeType.SEV_SNP, evidence(Tee.SNP, 8), None),
        (TeeType.TDX, evidence(Tee.SNP, 8), "TeeMismatch"),
        (TeeType.SEV_SNP, evidence(Tee.TDX, 8), "TeeMismatch"),
        (TeeType.SEV_SNP, evidence(Tee.SNP, 7), "GpuEvidenceMissing"),
        (TeeType.TDX, evidence(Tee.TDX, 9), "TooManyGpuEvidences"),
        (TeeType.TDX, evidence(Tee.TDX, 0), "GpuEvidenceMissing"),
    ],
)
def test_node_level_refusals(declared: TeeType, ev: NodeEvidence, reason: str | None) -> None:
    refusal = lifecycle.node_refusal(declared, 8, ev)
    assert (refusal.reason if refusal else None) == reason


@pytest.mark.parametrize(
    ("outstanding", "nonce", "reason"),
    [
        (challenge(NOW - 10 * T), bytes(32), None),
        (None, bytes(32), "NonceNotCurrent"),  # already used: appraisal cleared it
        (challenge(NOW - 10 * T), b"\x01" * 32, "NonceNotCurrent"),  # stale or forged
        (challenge(NOW - 300 * T), bytes(32), "ChallengeExpired"),
        (challenge(NOW - 299 * T), bytes(32), None),
    ],
)
def test_nonce_refusal(outstanding: Challenge | None, nonce: bytes, reason: str | None) -> None:
    refusal = lifecycle.nonce_refusal(outstanding, nonce, NOW)
    assert (refusal.reason if refusal else None) == reason
