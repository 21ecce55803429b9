"""Prometheus metrics with bounded labels.

Labels: `model` is one of the configured models or `other`; `protocol` is http or grpc;
`unit`, `outcome` and `reason` are fixed sets. Channels are deliberately not a label: their
number is unbounded and a per-tenant series would leak who uses the pool to anyone who can scrape
it; per-channel figures go through the signed usage report instead.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cocoon.meter.pricing import Units

OTHER_MODEL = "other"
_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0
)


class MeterMetrics:
    def __init__(self, models: Iterable[str], registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.models = frozenset(models)
        r = self.registry
        self.requests = Counter(
            "cocoon_meter_requests", "Calls metered, by outcome.",
            ["model", "protocol", "outcome"], registry=r,
        )
        self.units = Counter(
            "cocoon_meter_units", "Billable units charged.", ["model", "unit"], registry=r
        )
        self.cost = Counter(
            "cocoon_meter_cost_nanoton", "Nanoton charged.", ["model"], registry=r
        )
        self.rejections = Counter(
            "cocoon_meter_rejections", "Calls refused by the meter, by reason.", ["reason"],
            registry=r,
        )
        self.added_latency = Histogram(
            "cocoon_meter_added_latency_seconds",
            "Time a call spent in the meter itself (total minus waiting on Triton), "
            "journal commit included.",
            ["protocol"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.journal_commit = Histogram(
            "cocoon_meter_journal_commit_seconds", "Wait for a charge to become durable.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.in_flight = Gauge("cocoon_meter_in_flight", "Calls in flight.", registry=r)

    def model_label(self, model: str) -> str:
        return model if model in self.models else OTHER_MODEL

    def charged(self, model: str, protocol: str, outcome: str, units: Units, cost: int) -> None:
        label = self.model_label(model)
        self.requests.labels(label, protocol, outcome).inc()
        for unit, count in units.as_dict().items():
            if count:
                self.units.labels(label, unit).inc(count)
        if cost:
            self.cost.labels(label).inc(cost)
