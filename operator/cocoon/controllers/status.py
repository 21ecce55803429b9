"""Writing status the same way for every kind: conditions merged, observedGeneration stamped."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cocoon.api.common import Condition, ConditionStatus, find_condition, set_condition, utcnow
from cocoon.attestation.policy import ANY_MEASUREMENT
from cocoon.attestation.upkeep import AWAITING_EVIDENCE
from cocoon.kube import EVENTS, Kind, Kube

# Conditions whose True is the abnormal state (like a Node's MemoryPressure): their transitions
# get an Event too, a Warning when they become True.
ABNORMAL_TRUE = frozenset({ANY_MEASUREMENT})

# Reasons an object's first Ready condition gives while it waits for its first input: where
# every node starts, not news (10,000 nodes would write 10,000 Warnings). Leaving it, or any
# later transition into it, still gets its Event.
QUIET_FIRST = frozenset({AWAITING_EVIDENCE})


def merged_conditions(
    current: list[dict[str, Any]],
    generation: int,
    updates: list[tuple[str, ConditionStatus, str, str]],
) -> tuple[list[Condition], list[tuple[Condition | None, Condition]]]:
    """New condition list and the (before, after) pairs whose status or reason changed."""
    conditions = [Condition.model_validate(c) for c in current]
    changes = []
    now = utcnow()
    for type_, status, reason, message in updates:
        before = find_condition(conditions, type_)
        conditions = set_condition(
            conditions,
            type=type_,
            status=status,
            reason=reason,
            message=message,
            generation=generation,
            now=now,
        )
        after = find_condition(conditions, type_)
        assert after is not None
        if before is None or (before.status, before.reason) != (after.status, after.reason):
            changes.append((before, after))
    return conditions, changes


async def write(
    kube: Kube,
    kind: Kind,
    body: Mapping[str, Any],
    fields: dict[str, Any],
    updates: list[tuple[str, ConditionStatus, str, str]],
    *,
    precondition: bool = False,
) -> dict[str, Any]:
    """Patch .status with `fields` and condition updates; post an Event for each transition.
    Returns the object as written (callers keep it instead of reading it back).

    With `precondition` the patch carries the body's resourceVersion: it fails with 409 when
    the object changed since it was read (another replica wrote first)."""
    meta = body["metadata"]
    generation = int(meta.get("generation") or 0)
    current = list((body.get("status") or {}).get("conditions") or [])
    conditions, changes = merged_conditions(current, generation, updates)
    status = {
        **fields,
        "observedGeneration": generation,
        "conditions": [c.to_api() for c in conditions],
    }
    patch: dict[str, Any] = {"status": status}
    if precondition:
        patch["metadata"] = {"resourceVersion": meta["resourceVersion"]}
    written = await kube.patch(
        kind, meta["name"], patch, meta.get("namespace"), subresource="status"
    )
    for before, after in changes:
        if before is None and after.reason in QUIET_FIRST:
            continue
        if after.type == "Ready" or after.type in ABNORMAL_TRUE:
            await post_event(kube, body, after)
    return written


async def post_event(kube: Kube, body: Mapping[str, Any], condition: Condition) -> None:
    """An Event for a Ready (or abnormal-true) transition, so `kubectl describe` tells the story
    without logs."""
    healthy = (condition.status is ConditionStatus.TRUE) != (condition.type in ABNORMAL_TRUE)
    meta = body["metadata"]
    now = utcnow().isoformat().replace("+00:00", "Z")
    await kube.create(
        EVENTS,
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "generateName": f"{meta['name']}.",
                "namespace": meta.get("namespace") or "default",
            },
            "involvedObject": {
                "apiVersion": body.get("apiVersion"),
                "kind": body.get("kind"),
                "name": meta["name"],
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": "Normal" if healthy else "Warning",
            "reason": condition.reason,
            "message": condition.message[:1024],
            "source": {"component": "cocoon-operator"},
            "reportingComponent": "cocoon-operator",
            "reportingInstance": "cocoon-operator",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        },
    )
