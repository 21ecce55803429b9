"""Which status writes post an Event: Ready transitions and abnormal conditions, except the
first wait every node starts in (at fleet scale, one Warning per node that says nothing)."""

from __future__ import annotations

import pytest

from cocoon.api.common import ConditionStatus
from cocoon.controllers import status
from cocoon.kube import ATTESTED_NODES, Obj
from tests.payments.fakekube import FakeKube

F, T = ConditionStatus.FALSE, ConditionStatus.TRUE


def ready(state: ConditionStatus, reason: str) -> Obj:
    return {
        "type": "Ready",
        "status": state.value,
        "reason": reason,
        "message": "m",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "observedGeneration": 1,
    }


@pytest.mark.parametrize(
    ("current", "update", "events"),
    [
        ([], (F, "AwaitingEvidence"), []),  # the first wait: where every node starts
        ([], (F, "PolicyMissing"), [("PolicyMissing", "Warning")]),  # a first failure is news
        ([], (T, "Verified"), [("Verified", "Normal")]),
        ([ready(F, "AwaitingEvidence")], (T, "Verified"), [("Verified", "Normal")]),
        ([ready(F, "VerdictExpired")], (F, "AwaitingEvidence"), [("AwaitingEvidence", "Warning")]),
        ([ready(T, "Verified")], (T, "Verified"), []),  # no transition
    ],
)
async def test_events(
    current: list[Obj], update: tuple[ConditionStatus, str], events: list[tuple[str, str]]
) -> None:
    kube = FakeKube()
    body = kube.put(ATTESTED_NODES, {"metadata": {"name": "n1"}, "status": {"conditions": current}})
    await status.write(kube, ATTESTED_NODES, body, {}, [("Ready", *update, "message")])
    assert [(e["reason"], e["type"]) for e in kube.events] == events
