"""A verdict is written, then the Node keeps changing under the label write (heartbeats at
fleet scale): the evidence route must not answer 500 for a verdict it stored; the effects are
left to the AttestedNode's watch event and the next pass. Discovery likewise creates the
AttestedNode and leaves the taint to the Node's next change. Other errors still surface."""

from __future__ import annotations

from typing import Any

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


class BusyNodes(FakeKube):
    """Every Node write conflicts (or fails with `status`), as when heartbeats win each time."""

    def __init__(self, status: int) -> None:
        super().__init__()
        self.status = status
        self.patches = 0

    async def patch(self, kind: Kind, name: str, patch: Obj, *a: Any, **kw: Any) -> Obj:
        self.patches += 1
        raise ApiException(status=self.status)


def node() -> Obj:
    return {
        "metadata": {"name": "n1", "resourceVersion": "1", "labels": {"cocoon.dev/tee": "sev-snp"}},
        "spec": {"taints": [{"key": "cocoon.dev/unattested", "effect": "NoExecute"}]},
    }


async def test_a_node_that_keeps_changing_is_left_to_the_pass() -> None:
    kube = BusyNodes(409)
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
    kube = BusyDiscovery(409)
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
