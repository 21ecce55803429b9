"""Prometheus metrics with bounded labels.

Labels: `model` is one of the configured models or `other`; `protocol` is http or grpc;
`unit`, `outcome` and `reason` are fixed sets. Channels are deliberately not a label: their
number is unbounded and a per-tenant series would leak who uses the pool to anyone who can scrape
it; per-channel figures go through the signed usage report instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cocoon.meter.pricing import UNIT_TYPES, Units

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
        # Children cached by label values: `labels()` costs a lock and a dict build per call.
        self._charged: dict[tuple[str, str, str], _Charged] = {}
        self._added: dict[str, Any] = {}

    def observe_added(self, protocol: str, seconds: float) -> None:
        child = self._added.get(protocol)
        if child is None:
            child = self._added[protocol] = self.added_latency.labels(protocol)
        child.observe(seconds)

    def model_label(self, model: str) -> str:
        return model if model in self.models else OTHER_MODEL

    def charged(self, model: str, protocol: str, outcome: str, units: Units, cost: int) -> None:
        key = (model, protocol, outcome)
        children = self._charged.get(key)
        if children is None:
            if len(self._charged) > 4096:  # bounded: unknown models all map to `other`
                self._charged.clear()
            label = self.model_label(model)
            children = self._charged[key] = _Charged(
                self.requests.labels(label, protocol, outcome),
                tuple(self.units.labels(label, unit) for unit in UNIT_TYPES),
                self.cost.labels(label),
            )
        children.requests.inc()
        for child, count in zip(
            children.units,
            (units.requests, units.input_tokens, units.output_tokens,
             units.cached_input_tokens, units.reasoning_tokens),
            strict=True,
        ):
            if count:
                child.inc(count)
        if cost:
            children.cost.inc(cost)


@dataclass(frozen=True, slots=True)
class _Charged:
    requests: Any
    units: tuple[Any, ...]
    cost: Any
