"""Refusals waiting for a channel's next accepted write: carried once, bounded in memory."""

from __future__ import annotations

from cocoon.controllers import rejections
from cocoon.controllers.rejections import PendingRejections


def test_carried_once_and_what_arrives_meanwhile_waits() -> None:
    pending = PendingRejections()
    for _ in range(3):
        pending.add(("ns", "ch"))
    count, fields = pending.carry(("ns", "ch"), {"rejectedReports": 4})
    assert (count, fields) == (3, {"rejectedReports": 7})
    pending.add(("ns", "ch"))  # refused while the write was in flight
    pending.written(("ns", "ch"), count)
    assert pending.carry(("ns", "ch"), {"rejectedReports": 7}) == (1, {"rejectedReports": 8})
    pending.written(("ns", "ch"), 1)
    assert pending.carry(("ns", "ch"), {}) == (0, {})
    assert not pending.counts


def test_bounded() -> None:
    pending = PendingRejections()
    for i in range(rejections.MAX_CHANNELS + 5):
        pending.add(("ns", f"ch{i}"))
    assert len(pending.counts) == rejections.MAX_CHANNELS
    pending.add(("ns", "ch0"))  # a channel already waiting still counts
    assert pending.counts[("ns", "ch0")] == 2
