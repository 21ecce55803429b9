"""`cocoon uninstall` (the chart's pre-delete hook) against an in-memory API server: after it, no
node is labelled attested, no verdict is left, no pool serves and no channel keeps a finalizer
that nothing would ever remove."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cocoon.controllers import uninstall
from cocoon.kube import ATTESTED_NODES, DEPLOYMENTS, NODES, PAYMENT_CHANNELS, PODS, Obj
from tests.payments.fakekube import FakeKube

OPERATOR_SELECTOR = {"app.kubernetes.io/name": "cocoon-operator"}


@pytest.mark.parametrize(
    ("finalizers", "expected"),
    [
        (None, None),
        ([], None),
        (["other.io/keep"], None),
        (["cocoon.dev/finalizer"], None),  # the whole list goes (null in a merge patch)
        (["other.io/keep", "cocoon.dev/finalizer"], ["other.io/keep"]),
    ],
)
def test_finalizer_patch(finalizers: list[str] | None, expected: list[str] | None) -> None:
    obj: Obj = {"metadata": {"name": "c", "resourceVersion": "7"}}
    if finalizers is not None:
        obj["metadata"]["finalizers"] = finalizers
    patch = uninstall.finalizer_patch(obj)
    if "cocoon.dev/finalizer" not in (finalizers or []):
        assert patch is None
    else:
        assert patch == {"metadata": {"finalizers": expected, "resourceVersion": "7"}}


@pytest.mark.parametrize(
    ("replicas", "expected"),
    [(0, None), (1, {"spec": {"replicas": 0}}), (None, {"spec": {"replicas": 0}})],
)
def test_scale_patch(replicas: int | None, expected: Obj | None) -> None:
    assert uninstall.scale_patch({"spec": {"replicas": replicas}}) == expected


def deployment(name: str, namespace: str, labels: dict[str, str], **spec: Any) -> Obj:
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels}, **spec},
    }


def cluster() -> FakeKube:
    kube = FakeKube()
    kube.put(DEPLOYMENTS, deployment("cocoon-operator", "cocoon-system", OPERATOR_SELECTOR))
    kube.put(
        DEPLOYMENTS,
        deployment("chat", "tenant", {"app.kubernetes.io/managed-by": "cocoon-operator"}),
    )
    kube.put(DEPLOYMENTS, deployment("other", "tenant", {"app": "other"}))
    labels = {
        "cocoon.dev/attested": "true",
        "cocoon.dev/gpu-cc": "true",
        "cocoon.dev/tee": "sev-snp",
    }
    taints = [{"key": "team", "value": "a", "effect": "NoSchedule"}]
    kube.put(NODES, {"metadata": {"name": "n1", "labels": labels}, "spec": {"taints": taints}})
    kube.put(ATTESTED_NODES, {"metadata": {"name": "n1"}, "status": {"verdict": "Verified"}})
    kube.put(ATTESTED_NODES, {"metadata": {"name": "gone"}, "status": {"verdict": "Verified"}})
    for name, finalizers in (("a", ["cocoon.dev/finalizer"]), ("b", ["x.io/y"])):
        kube.put(
            PAYMENT_CHANNELS,
            {"metadata": {"name": name, "namespace": "tenant", "finalizers": finalizers}},
        )
    return kube


def test_uninstall_releases_nodes_pools_and_channels_only() -> None:
    kube = cluster()

    async def run() -> dict[str, int]:
        await uninstall.stop_operator(kube, "cocoon-system", "cocoon-operator")  # type: ignore[arg-type]
        return {
            "nodes": await uninstall.release_nodes(kube),  # type: ignore[arg-type]
            "pools": await uninstall.stop_pools(kube),  # type: ignore[arg-type]
            "channels": await uninstall.release_channels(kube),  # type: ignore[arg-type]
        }

    assert asyncio.run(run()) == {"nodes": 2, "pools": 1, "channels": 1}
    replicas = {
        o["metadata"]["name"]: o["spec"]["replicas"] for o in asyncio.run(kube.list(DEPLOYMENTS))
    }
    assert replicas == {"cocoon-operator": 0, "chat": 0, "other": 2}
    assert asyncio.run(kube.list(ATTESTED_NODES)) == []
    node = asyncio.run(kube.get(NODES, "n1"))
    assert node["metadata"]["labels"] == {"cocoon.dev/tee": "sev-snp"}  # the node's own label
    assert node["spec"]["taints"] == [{"key": "team", "value": "a", "effect": "NoSchedule"}]
    finalizers = {
        o["metadata"]["name"]: o["metadata"].get("finalizers")
        for o in asyncio.run(kube.list(PAYMENT_CHANNELS))
    }
    assert finalizers == {"a": None, "b": ["x.io/y"]}


def test_the_operator_is_waited_out_before_anything_is_released() -> None:
    kube = cluster()
    kube.put(
        PODS,
        {"metadata": {"name": "op-1", "namespace": "cocoon-system", "labels": OPERATOR_SELECTOR}},
    )

    async def run() -> None:
        stopping = asyncio.create_task(
            uninstall.stop_operator(kube, "cocoon-system", "cocoon-operator")  # type: ignore[arg-type]
        )
        await asyncio.sleep(1.5)
        assert not stopping.done(), "returned while an operator pod still runs"
        await kube.delete(PODS, "op-1", "cocoon-system")
        await asyncio.wait_for(stopping, 5)

    asyncio.run(run())
