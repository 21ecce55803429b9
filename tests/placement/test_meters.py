"""Meter registration decisions: challenges, pod identity, placement, the pool's records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cocoon.attestation.endpoint import EndpointEvidence
from cocoon.meter.pricing import Price
from cocoon.placement import meters

KEY = meters.challenge_key(b"operator signing key")
NOW = 1_800_000_000
WHO = meters.PodIdentity("team", "chat-abc", "uid-1", "gpu-1")


def doc(pool: str = "team/chat") -> EndpointEvidence:
    return EndpointEvidence(
        nonce="00" * 32, tls_spki_sha256="11" * 32, receipt_public_key="22" * 32,
        issued_at=datetime.fromtimestamp(NOW, UTC), evidence={}, pool=pool,
    )


def pod(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": "chat-abc", "uid": "uid-1", "labels": {"cocoon.dev/pool": "chat"}},
        "spec": {"nodeName": "gpu-1"},
    }
    for path, value in changes.items():
        section, key = path.split("__")
        body[section][key] = value
    return body


@pytest.mark.parametrize(
    ("nonce", "now", "reason"),
    [
        (meters.challenge(KEY, NOW), NOW + 5, None),
        (meters.challenge(KEY, NOW), NOW + meters.CHALLENGE_SECONDS + 1, "ChallengeExpired"),
        (meters.challenge(KEY, NOW + 60), NOW, "ChallengeExpired"),  # from the future
        (meters.challenge(meters.challenge_key(b"another operator"), NOW), NOW, "BadChallenge"),
        (bytes(32), NOW, "BadChallenge"),  # forged
        (meters.challenge(KEY, NOW)[:31], NOW, "BadChallenge"),  # truncated
    ],
)
def test_challenges(nonce: bytes, now: int, reason: str | None) -> None:
    refusal = meters.challenge_refusal(KEY, nonce, now)
    assert (refusal.reason if refusal else None) == reason


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        (
            {"username": "system:serviceaccount:team:default", "extra": {
                "authentication.kubernetes.io/pod-name": ["chat-abc"],
                "authentication.kubernetes.io/pod-uid": ["uid-1"],
                "authentication.kubernetes.io/node-name": ["gpu-1"]}},
            WHO,
        ),
        ({"username": "system:serviceaccount:team:default", "extra": {}}, None),  # not bound
        ({"username": "alice", "extra": {
            "authentication.kubernetes.io/pod-name": ["x"],
            "authentication.kubernetes.io/pod-uid": ["u"],
            "authentication.kubernetes.io/node-name": ["n"]}}, None),  # not a ServiceAccount
    ],
)
def test_pod_identity(user: dict[str, Any], expected: meters.PodIdentity | None) -> None:
    assert meters.pod_identity(user) == expected


@pytest.mark.parametrize(
    ("body", "document", "reason"),
    [
        (pod(), doc(), None),
        (None, doc(), "PodNotFound"),
        (pod(metadata__uid="uid-2"), doc(), "PodReplaced"),
        (pod(metadata__deletionTimestamp="2026-01-01T00:00:00Z"), doc(), "PodTerminating"),
        (pod(metadata__labels={}), doc(), "NotAPoolPod"),
        (pod(spec__nodeName="gpu-2"), doc(), "WrongNode"),
        (pod(), doc("team/other"), "PoolMismatch"),
        (pod(), doc("other-team/chat"), "PoolMismatch"),
    ],
)
def test_placement(body: dict[str, Any] | None, document: EndpointEvidence, reason: str | None):  # type: ignore[no-untyped-def]
    refusal = meters.placement_refusal(WHO, body, document)
    assert (refusal.reason if refusal else None) == reason


def test_records_one_per_pod_none_expired() -> None:
    now = datetime.fromtimestamp(NOW, UTC)
    first = meters.record(
        WHO, doc(), "a" * 32, price=Price(), generation=1, now=now, lifetime=timedelta(60)
    )
    restarted = meters.record(
        WHO, doc().model_copy(update={"receipt_public_key": "33" * 32}), "a" * 32,
        price=Price(), generation=1, now=now, lifetime=timedelta(60),
    )
    other = meters.record(meters.PodIdentity("team", "chat-def", "uid-9", "gpu-2"), doc(),
                          "b" * 32, price=Price(), generation=1, now=now - timedelta(days=90),
                          lifetime=timedelta(1))
    records = meters.merged([first, other], restarted, now)
    assert [r.receipt_public_key for r in records] == ["33" * 32]  # replaced; expired dropped
    assert meters.find(records, "33" * 32, now) == restarted
    assert meters.find(records, "22" * 32, now) is None
    assert meters.find(records, "33" * 32, now + timedelta(61)) is None
    assert meters.live(records, now, pods={"uid-other"}) == []
