"""A verdict is written, then the Node keeps changing under the label write (heartbeats at
fleet scale): the evidence route must not answer 500 for a verdict it stored; the effects are
left to the AttestedNode's watch event and the next pass. Discovery likewise creates the
AttestedNode and leaves the taint to the Node's next change. Other errors still surface.

The taint write is guarded by a JSON-patch `test` of the spec it read, not by the Node's
resourceVersion: a heartbeat does not fail it, another writer's taint does, and is kept."""

from __future__ import annotations

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from cocoon.controllers import nodes
from cocoon.kube import NODES, Kind, Obj
from tests.payments.fakekube import FakeKube

VERIFIED: Obj = {
    "metadata": {"name": "n1"},
    "spec": {"tee": "sev-snp"},
    "status": {"verdict": "Verified", "expiresAt": "2999-01-01T00:00:00+00:00"},
}


PENDING: Obj = {**VERIFIED, "status": {"verdict": "Pending"}}
THEIRS = {"key": "example.com/maintenance", "value": "true", "effect": "NoSchedule"}
OURS = {"key": "cocoon.dev/unattested", "value": "true", "effect": "NoSchedule"}


class BusyNodes(FakeKube):
    """Every Node write fails its test (or fails with `status`), as when another writer wins
    each time."""

    def __init__(self, status: int) -> None:
        super().__init__()
        self.status = status
        self.patches = 0

    async def patch_ops(self, kind: Kind, name: str, ops: list[Obj]) -> Obj:
        self.patches += 1
        raise ApiException(status=self.status)


def node() -> Obj:
    return {
        "metadata": {"name": "n1", "resourceVersion": "1", "labels": {"cocoon.dev/tee": "sev-snp"}},
        "spec": {"taints": [{"key": "cocoon.dev/unattested", "effect": "NoExecute"}]},
    }


@pytest.mark.parametrize("status", [409, 422])
async def test_a_node_that_keeps_changing_is_left_to_the_pass(status: int) -> None:
    kube = BusyNodes(status)
    kube.put(NODES, node())
    assert nodes.effects_patch(node(), VERIFIED)  # there is something to write
    assert await nodes.apply_effects_or_defer(kube, node(), VERIFIED) is None
    assert kube.patches == 2  # tried, re-read, tried again


@pytest.mark.parametrize("status", [403, 500])
async def test_other_failures_still_surface(status: int) -> None:
    kube = BusyNodes(status)
    kube.put(NODES, node())
    with pytest.raises(ApiException):
        await nodes.apply_effects_or_defer(kube, node(), VERIFIED)


class BusyDiscovery(BusyNodes):
    """BusyNodes that also takes the AttestedNode's server-side apply."""

    async def apply(self, kind: Kind, obj: Obj) -> Obj:
        return self.put(kind, obj)


async def test_discovery_of_a_node_that_keeps_changing_still_creates_its_attested_node() -> None:
    kube = BusyDiscovery(422)
    kube.put(NODES, node())
    live = {**node(), "metadata": {**node()["metadata"], "uid": "u1"}, "spec": {}}
    attested, patched = await nodes.discover(live, kube, None)
    assert attested is not None and patched is None
    assert kube.patches == 2  # the taint write was tried twice, then left to the next change


async def test_discovery_still_surfaces_other_failures() -> None:
    kube = BusyDiscovery(500)
    kube.put(NODES, node())
    live = {**node(), "metadata": {**node()["metadata"], "uid": "u1"}, "spec": {}}
    with pytest.raises(ApiException):
        await nodes.discover(live, kube, None)


def fresh_node() -> Obj:
    return {
        "metadata": {"name": "n1", "labels": {"cocoon.dev/tee": "sev-snp"}},
        "spec": {},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


async def test_a_heartbeat_does_not_fail_the_taint_write() -> None:
    kube = FakeKube()
    read = kube.put(NODES, fresh_node())
    heartbeat = {"status": {"conditions": [{"type": "Ready", "status": "True", "at": "later"}]}}
    await kube.patch(NODES, "n1", heartbeat, subresource="status")
    kube.api_calls.clear()
    written = await nodes.apply_effects(kube, read, PENDING)
    assert written is not None
    assert [t["key"] for t in written["spec"]["taints"]] == ["cocoon.dev/unattested"]
    assert kube.api_calls == [("patch", "nodes")]  # one write: no conflict, no re-read


async def test_another_writers_taint_fails_the_write_and_is_kept() -> None:
    """The attack on a guard-less write: a cordon-like taint lands between our read and our
    write; replacing the list from the stale copy would silently drop it."""
    kube = FakeKube()
    read = kube.put(NODES, fresh_node())
    await kube.patch(NODES, "n1", {"spec": {"taints": [THEIRS]}})
    kube.api_calls.clear()
    written = await nodes.apply_effects(kube, read, PENDING)
    assert written is not None
    keys = [t["key"] for t in written["spec"]["taints"]]
    assert keys == ["example.com/maintenance", "cocoon.dev/unattested"]
    assert kube.api_calls == [("patch", "nodes"), ("get", "nodes"), ("patch", "nodes")]


@pytest.mark.parametrize(
    ("labels", "spec", "attested", "ops"),
    [
        # verified, no labels at all: the map is added whole, no taint to touch
        (
            {},
            {},
            VERIFIED,
            [
                {
                    "op": "add",
                    "path": "/metadata/labels",
                    "value": {"cocoon.dev/attested": "true", "cocoon.dev/tee": "sev-snp"},
                }
            ],
        ),
        # keys are JSON-pointer escaped; a label to drop is removed; the taint goes, guarded
        (
            {"cocoon.dev/tee": "sev-snp", "cocoon.dev/gpu-cc": "true"},
            {"taints": [THEIRS, OURS], "podCIDR": "10.0.0.0/24"},
            VERIFIED,
            [
                {
                    "op": "test",
                    "path": "/spec",
                    "value": {"taints": [THEIRS, OURS], "podCIDR": "10.0.0.0/24"},
                },
                {"op": "add", "path": "/spec/taints", "value": [THEIRS]},
                {"op": "add", "path": "/metadata/labels/cocoon.dev~1attested", "value": "true"},
                {"op": "remove", "path": "/metadata/labels/cocoon.dev~1gpu-cc"},
            ],
        ),
        # pending: the taint is added next to another writer's, guarded by the spec as read
        (
            {"cocoon.dev/tee": "sev-snp"},
            {"taints": [THEIRS]},
            PENDING,
            [
                {"op": "test", "path": "/spec", "value": {"taints": [THEIRS]}},
                {"op": "add", "path": "/spec/taints", "value": [THEIRS, OURS]},
            ],
        ),
        # already in line: nothing to write
        ({"cocoon.dev/tee": "sev-snp"}, {"taints": [OURS]}, PENDING, []),
    ],
)
def test_effects_patch(labels: Obj, spec: Obj, attested: Obj, ops: list[Obj]) -> None:
    node = {"metadata": {"name": "n1", "labels": labels}, "spec": spec}
    assert nodes.effects_patch(node, attested) == ops
