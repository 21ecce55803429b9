"""Pure decisions for meter registration: challenges, placement checks, the pool's records.

A meter registers by answering an operator challenge with endpoint evidence for its in-memory
keys, sent with its pod-bound ServiceAccount token. The challenge is stateless (a timestamp
and an HMAC under a key every operator replica derives from the shared signing key), so any
replica can check it and nothing is written before a registration is proven.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cocoon.api.inferencepool import MeterRecord
from cocoon.attestation.endpoint import EndpointEvidence
from cocoon.attestation.verdict import Failure
from cocoon.meter import pricing
from cocoon.meter.pricing import Price
from cocoon.placement.labels import POOL_LABEL

METER_CONTAINER = "meter"

CHALLENGE_DOMAIN = b"cocoon.dev/meter-challenge/v1\n"
CHALLENGE_SECONDS = 120
_STAMP = 8
_MAC = 24


def challenge_key(secret: bytes) -> bytes:
    return hashlib.sha256(CHALLENGE_DOMAIN + secret).digest()


def challenge(key: bytes, now: int) -> bytes:
    """32 bytes: the issue time and a MAC over it; only an operator replica can make one."""
    stamp = now.to_bytes(_STAMP, "big")
    return stamp + hmac.new(key, stamp, hashlib.sha256).digest()[:_MAC]


def challenge_refusal(
    key: bytes, nonce: bytes, now: int, lifetime: int = CHALLENGE_SECONDS
) -> Failure | None:
    if len(nonce) != _STAMP + _MAC:
        return Failure("BadChallenge", "the evidence does not answer an operator challenge")
    stamp = nonce[:_STAMP]
    expected = hmac.new(key, stamp, hashlib.sha256).digest()[:_MAC]
    if not hmac.compare_digest(expected, nonce[_STAMP:]):
        return Failure(
            "BadChallenge",
            "the evidence answers a challenge this operator never "
            "issued: GET /meters/v1/challenge first",
        )
    age = now - int.from_bytes(stamp, "big")
    if not 0 <= age <= lifetime:
        return Failure(
            "ChallengeExpired",
            f"the challenge is {age}s old; challenges last {lifetime}s: ask for a new one",
        )
    return None


@dataclass(frozen=True)
class PodIdentity:
    """What TokenReview says about a pod-bound ServiceAccount token."""

    namespace: str
    pod: str
    pod_uid: str
    node: str


def pod_identity(user: Mapping[str, Any]) -> PodIdentity | None:
    """From a TokenReview's status.user: only pod-bound ServiceAccount tokens qualify."""
    name = str(user.get("username", ""))
    extra = user.get("extra") or {}

    def first(key: str) -> str:
        values = extra.get(f"authentication.kubernetes.io/{key}") or []
        return str(values[0]) if values else ""

    parts = name.split(":")
    if len(parts) != 4 or parts[:2] != ["system", "serviceaccount"]:
        return None
    pod, uid, node = first("pod-name"), first("pod-uid"), first("node-name")
    if not (pod and uid and node):
        return None
    return PodIdentity(parts[2], pod, uid, node)


def placement_refusal(
    who: PodIdentity, pod: Mapping[str, Any] | None, document: EndpointEvidence
) -> Failure | None:
    """The token's pod must be the live pod of a pool, on the node it says, for that pool."""
    if pod is None:
        return Failure("PodNotFound", f"pod {who.namespace}/{who.pod} no longer exists")
    meta = pod.get("metadata") or {}
    if meta.get("uid") != who.pod_uid:
        return Failure("PodReplaced", f"pod {who.namespace}/{who.pod} is another pod now")
    if meta.get("deletionTimestamp"):
        return Failure("PodTerminating", f"pod {who.namespace}/{who.pod} is terminating")
    pool = (meta.get("labels") or {}).get(POOL_LABEL)
    if not pool:
        return Failure(
            "NotAPoolPod",
            f"pod {who.namespace}/{who.pod} belongs to no "
            "InferencePool; only pool pods' meters register",
        )
    if (pod.get("spec") or {}).get("nodeName") != who.node:
        return Failure("WrongNode", "the token's node is not the pod's node")
    if document.pool != f"{who.namespace}/{pool}":
        return Failure(
            "PoolMismatch",
            f"the meter says it serves {document.pool!r}, its pod "
            f"belongs to {who.namespace}/{pool}",
        )
    return None


def meter_price(pod: Mapping[str, Any]) -> Price | None:
    """The price the pod's meter container was started with; None when it has none."""
    containers = (pod.get("spec") or {}).get("containers") or []
    meter = next((c for c in containers if c.get("name") == METER_CONTAINER), None)
    if meter is None:
        return None
    try:
        return pricing.from_cli_args([str(a) for a in meter.get("args") or []])
    except ValueError:
        return None


def record(
    who: PodIdentity,
    document: EndpointEvidence,
    journal_id: str,
    *,
    price: Price,
    generation: int,
    now: datetime,
    lifetime: timedelta,
) -> MeterRecord:
    return MeterRecord(
        pod=who.pod,
        pod_uid=who.pod_uid,
        node=who.node,
        receipt_public_key=document.receipt_public_key,
        tls_spki_sha256=document.tls_spki_sha256,
        journal_id=journal_id,
        pool_generation=generation,
        price=price,
        verified_at=now,
        expires_at=now + lifetime,
    )


def merged(records: Sequence[MeterRecord], new: MeterRecord, now: datetime) -> list[MeterRecord]:
    """The pool's records with `new`: one per pod (the latest instance), none expired."""
    kept = [r for r in records if r.pod_uid != new.pod_uid and r.expires_at > now]
    return sorted([*kept, new], key=lambda r: r.pod)


def live(records: Sequence[MeterRecord], now: datetime, pods: set[str]) -> list[MeterRecord]:
    """Records whose pod (uid) still exists and whose verification has not lapsed."""
    return [r for r in records if r.expires_at > now and r.pod_uid in pods]


def find(records: Sequence[MeterRecord], public_key: str, now: datetime) -> MeterRecord | None:
    return next(
        (r for r in records if r.receipt_public_key == public_key and r.expires_at > now), None
    )


def utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
