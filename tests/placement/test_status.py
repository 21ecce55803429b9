"""The pool readiness chain, one row per situation a human could find a pool in."""

from __future__ import annotations

import pytest

from cocoon.api.common import ConditionStatus
from cocoon.api.inferencepool import ModelState
from cocoon.placement.status import Observed, PodView, decide, pod_view

GPU_MSG = (
    "0/3 nodes are available: 1 Insufficient nvidia.com/gpu, 2 node(s) didn't match "
    "Pod's node affinity/selector."
)


def observed(**kw: object) -> Observed:
    base: dict[str, object] = dict(
        desired=3,
        generation=2,
        deployment_exists=True,
        deployment_generation=2,
        deployment_observed=2,
        updated=3,
        pods=[],
        eligible_nodes=2,
        tee_types=["sev-snp", "tdx"],
        gpus_per_replica=8,
    )
    base.update(kw)
    return Observed(**base)  # type: ignore[arg-type]


READY = PodView("p0", "n0", ready=True)
READY1 = PodView("p1", "n1", ready=True)
READY2 = PodView("p2", "n1", ready=True)
STARTING = PodView("p3", "n0", ready=False)
PENDING_GPU = PodView("p4", "", ready=False, unschedulable=GPU_MSG)
PENDING_OTHER = PodView("p5", "", ready=False, unschedulable="0/3 nodes are available: volume")
PENDING_QUIET = PodView("p6", "", ready=False)
GOING = PodView("p7", "n0", ready=True, terminating=True)


@pytest.mark.parametrize(
    ("case", "obs", "status", "reason", "message_start"),
    [
        (
            "all ready",
            observed(pods=[READY, READY1, READY2]),
            ConditionStatus.TRUE,
            "AllReplicasReady",
            "3 of 3 replicas ready on n0, n1",
        ),
        (
            "scaled to zero",
            observed(desired=0),
            ConditionStatus.FALSE,
            "ScaledToZero",
            "spec.replicas is 0",
        ),
        (
            "no deployment yet",
            observed(deployment_exists=False),
            ConditionStatus.FALSE,
            "Reconciling",
            "The pool's Deployment does not exist yet",
        ),
        (
            "no attested node",
            observed(pods=[PENDING_GPU] * 3, eligible_nodes=0),
            ConditionStatus.FALSE,
            "NoAttestedNodes",
            "3 of 3 replicas pending: no node is attested for TEE types sev-snp, tdx",
        ),
        (
            "gpus exhausted",
            observed(pods=[READY, PENDING_GPU, PENDING_GPU]),
            ConditionStatus.FALSE,
            "InsufficientGPU",
            "2 of 3 replicas pending: no attested node has 8 free GPU(s) (2 attested nodes in all)",
        ),
        (
            "one attested node",
            observed(pods=[READY, READY1, PENDING_GPU], eligible_nodes=1),
            ConditionStatus.FALSE,
            "InsufficientGPU",
            "1 of 3 replicas pending: no attested node has 8 free GPU(s) (1 attested node in all)",
        ),
        (
            "other scheduler reason",
            observed(pods=[READY, READY1, PENDING_OTHER]),
            ConditionStatus.FALSE,
            "Unschedulable",
            "1 of 3 replicas pending: 0/3 nodes",
        ),
        (
            "not yet looked at",
            observed(pods=[READY, READY1, PENDING_QUIET]),
            ConditionStatus.FALSE,
            "Scheduling",
            "1 of 3 replicas pending: waiting",
        ),
        (
            "rolling",
            observed(pods=[READY, READY1, READY2], updated=1),
            ConditionStatus.FALSE,
            "RollingOut",
            "Rolling out generation 2: 1 of 3 replicas updated",
        ),
        (
            "deployment not observed",
            observed(pods=[READY, READY1, READY2], deployment_observed=1),
            ConditionStatus.FALSE,
            "RollingOut",
            "Rolling out generation 2",
        ),
        (
            "starting",
            observed(pods=[READY, READY1, STARTING]),
            ConditionStatus.FALSE,
            "ReplicasStarting",
            "2 of 3 replicas ready",
        ),
        (
            "terminating pods do not count",
            observed(pods=[READY, READY1, GOING]),
            ConditionStatus.FALSE,
            "ReplicasStarting",
            "2 of 3 replicas ready",
        ),
    ],
)
def test_readiness_chain(
    case: str, obs: Observed, status: ConditionStatus, reason: str, message_start: str
) -> None:
    view = decide(obs)
    assert (view.ready.status, view.ready.reason) == (status, reason), case
    assert view.ready.message.startswith(message_start), view.ready.message


@pytest.mark.parametrize(
    ("pods", "available", "model_state", "nodes"),
    [
        ([READY, PENDING_GPU], ConditionStatus.TRUE, ModelState.READY, ["n0"]),
        ([STARTING], ConditionStatus.FALSE, ModelState.LOADING, []),
        ([PENDING_GPU], ConditionStatus.FALSE, ModelState.UNAVAILABLE, []),
        ([READY, READY1, READY2, GOING], ConditionStatus.TRUE, ModelState.READY, ["n0", "n1"]),
    ],
)
def test_availability_and_model_state(
    pods: list[PodView], available: ConditionStatus, model_state: ModelState, nodes: list[str]
) -> None:
    view = decide(observed(pods=pods))
    assert view.available.status is available
    assert view.model_state is model_state
    assert view.nodes == nodes
    assert view.replicas == len([p for p in pods if not p.terminating])


def test_pod_view_reads_scheduler_message_only_when_unschedulable() -> None:
    pod = {
        "metadata": {"name": "x"},
        "spec": {},
        "status": {
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": GPU_MSG,
                }
            ]
        },
    }
    assert pod_view(pod) == PodView("x", "", ready=False, unschedulable=GPU_MSG)
    scheduled = {
        "metadata": {"name": "y", "deletionTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"nodeName": "n"},
        "status": {
            "conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "PodScheduled", "status": "True"},
            ]
        },
    }
    assert pod_view(scheduled) == PodView("y", "n", ready=True, terminating=True)
