"""Refused usage reports of authenticated meters, counted per channel in the replica's memory and
folded into the channel's next status write for accepted usage.

A refusal writes nothing of its own: a stolen or misbehaving meter key, at its rate limit, cannot
turn refusals into API-server writes. The payer still sees them in `status.rejectedReports` with
the channel's next accepted report, and every refusal is in the metrics at once. Counts that no
accepted report carries (a replica restarting first) are lost from status, never from metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# channels with refusals waiting at once; more (an attacker naming ever new channels cannot,
# as only existing channels are counted) are left to the metrics
MAX_CHANNELS = 10_000

Where = tuple[str, str]  # (namespace, name)


@dataclass
class PendingRejections:
    counts: dict[Where, int] = field(default_factory=dict)

    def add(self, where: Where) -> None:
        if where in self.counts or len(self.counts) < MAX_CHANNELS:
            self.counts[where] = self.counts.get(where, 0) + 1

    def carry(self, where: Where, status: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """How many refusals wait for the channel, and the status fields that carry them."""
        count = self.counts.get(where, 0)
        if not count:
            return 0, {}
        return count, {"rejectedReports": int(status.get("rejectedReports") or 0) + count}

    def written(self, where: Where, count: int) -> None:
        """`count` refusals reached the channel's status."""
        left = self.counts.get(where, 0) - count
        if left > 0:
            self.counts[where] = left
        else:
            self.counts.pop(where, None)
