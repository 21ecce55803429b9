"""Pure decisions about what an InferencePool's status says, from what the cluster shows.

Readiness is a chain of small checks (as cert-manager's readiness policies): the first that
fails names the reason and tells a human what to do; if none fails, the pool is Ready.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cocoon.api.common import ConditionStatus
from cocoon.api.inferencepool import ModelState
from cocoon.placement.labels import GPU_RESOURCE


@dataclass(frozen=True)
class PodView:
    name: str
    node: str
    ready: bool
    unschedulable: str = ""  # the scheduler's message when it could not place the pod
    terminating: bool = False


@dataclass(frozen=True)
class Observed:
    """What the controller saw; everything the decision needs, nothing else."""

    desired: int
    generation: int
    deployment_exists: bool
    deployment_generation: (
        int  # the Deployment's .status.observedGeneration vs .metadata.generation
    )
    deployment_observed: int
    updated: int
    pods: Sequence[PodView]
    eligible_nodes: int  # attested nodes whose TEE the pool allows
    tee_types: Sequence[str]
    gpus_per_replica: int


@dataclass(frozen=True)
class Verdict:
    status: ConditionStatus
    reason: str
    message: str


@dataclass(frozen=True)
class PoolStatusView:
    replicas: int
    ready_replicas: int
    nodes: list[str]
    model_state: ModelState
    ready: Verdict
    available: Verdict


Check = Callable[[Observed], Verdict | None]


def _live(o: Observed) -> list[PodView]:
    return [p for p in o.pods if not p.terminating]


def _ready_count(o: Observed) -> int:
    return sum(1 for p in _live(o) if p.ready)


def _pending(o: Observed) -> list[PodView]:
    return [p for p in _live(o) if not p.node]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def check_scaled_to_zero(o: Observed) -> Verdict | None:
    if o.desired == 0:
        return Verdict(
            ConditionStatus.FALSE,
            "ScaledToZero",
            "spec.replicas is 0, so nothing serves; scale the pool up to serve requests.",
        )
    return None


def check_deployment_created(o: Observed) -> Verdict | None:
    if not o.deployment_exists:
        return Verdict(
            ConditionStatus.FALSE,
            "Reconciling",
            "The pool's Deployment does not exist yet; the operator is creating it.",
        )
    return None


def check_pending(o: Observed) -> Verdict | None:
    pending = _pending(o)
    if not pending:
        return None
    head = f"{len(pending)} of {o.desired} replicas pending"
    tees = ", ".join(o.tee_types)
    scheduler = next((p.unschedulable for p in pending if p.unschedulable), "")
    if o.eligible_nodes == 0:
        return Verdict(
            ConditionStatus.FALSE,
            "NoAttestedNodes",
            f"{head}: no node is attested for TEE types {tees}. "
            "Check `kubectl get attestednodes` for why nodes are not verified.",
        )
    if f"Insufficient {GPU_RESOURCE}" in scheduler:
        return Verdict(
            ConditionStatus.FALSE,
            "InsufficientGPU",
            f"{head}: no attested node has {o.gpus_per_replica} free GPU(s) "
            f"({_plural(o.eligible_nodes, 'attested node')} in all). "
            "Add attested GPU nodes or lower replicas or gpusPerReplica.",
        )
    if scheduler:
        return Verdict(ConditionStatus.FALSE, "Unschedulable", f"{head}: {scheduler}")
    return Verdict(ConditionStatus.FALSE, "Scheduling", f"{head}: waiting for the scheduler.")


def check_rollout(o: Observed) -> Verdict | None:
    if o.deployment_observed < o.deployment_generation or o.updated < o.desired:
        return Verdict(
            ConditionStatus.FALSE,
            "RollingOut",
            f"Rolling out generation {o.generation}: {o.updated} of {o.desired} replicas updated.",
        )
    return None


def check_ready(o: Observed) -> Verdict | None:
    ready = _ready_count(o)
    if ready < o.desired:
        return Verdict(
            ConditionStatus.FALSE,
            "ReplicasStarting",
            f"{ready} of {o.desired} replicas ready; the rest are starting "
            "(Triton loading the model or the meter waiting for it).",
        )
    return None


READINESS_CHAIN: tuple[Check, ...] = (
    check_scaled_to_zero,
    check_deployment_created,
    check_pending,
    check_rollout,
    check_ready,
)


def decide(o: Observed) -> PoolStatusView:
    live = _live(o)
    ready_pods = [p for p in live if p.ready]
    nodes = sorted({p.node for p in ready_pods})
    ready = next(
        (v for v in (check(o) for check in READINESS_CHAIN) if v is not None),
        Verdict(
            ConditionStatus.TRUE,
            "AllReplicasReady",
            f"{len(ready_pods)} of {o.desired} replicas ready on {', '.join(nodes)}.",
        ),
    )
    if ready_pods:
        available = Verdict(
            ConditionStatus.TRUE, "Serving", f"{_plural(len(ready_pods), 'replica')} serving."
        )
        model_state = ModelState.READY
    else:
        available = Verdict(ConditionStatus.FALSE, ready.reason, ready.message)
        model_state = ModelState.LOADING if any(p.node for p in live) else ModelState.UNAVAILABLE
    return PoolStatusView(
        replicas=len(live),
        ready_replicas=len(ready_pods),
        nodes=nodes,
        model_state=model_state,
        ready=ready,
        available=available,
    )


def pod_view(pod: dict[str, object]) -> PodView:
    """Read just what the decision needs from a Pod object."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    assert isinstance(meta, dict) and isinstance(spec, dict) and isinstance(status, dict)
    conditions = status.get("conditions") or []
    by_type = {c.get("type"): c for c in conditions if isinstance(c, dict)}
    ready = by_type.get("Ready", {}).get("status") == "True"
    scheduled = by_type.get("PodScheduled", {})
    unschedulable = (
        str(scheduled.get("message", "")) if scheduled.get("reason") == "Unschedulable" else ""
    )
    return PodView(
        name=str(meta.get("name", "")),
        node=str(spec.get("nodeName") or ""),
        ready=ready,
        unschedulable=unschedulable,
        terminating=bool(meta.get("deletionTimestamp")),
    )
