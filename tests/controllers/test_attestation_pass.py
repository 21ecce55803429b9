"""The attestation pass against an in-memory API server, with the watch-fed views: once the
fleet is settled, a pass costs no API call at all, whatever the fleet's size; a node that
changes costs its own write, and a read only when the write conflicts."""

from __future__ import annotations

import collections
from datetime import timedelta
from typing import Any

import kopf

from cocoon import keys
from cocoon.api.common import utcnow
from cocoon.controllers import loops, nodes
from cocoon.controllers.attestednode import AttestationState
from cocoon.controllers.policies import PolicyCache
from cocoon.controllers.views import Views
from cocoon.kube import ATTESTATION_POLICIES, ATTESTED_NODES, NODES, Kind, Obj
from tests.payments.fakekube import FakeKube, merge

FLEET = 50
PASS = loops.Schedule("attestation", interval_s=1, timeout_s=5, concurrency=8)


class CountingKube(FakeKube):
    """FakeKube plus server-side apply, counting every call by verb and resource."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: collections.Counter[str] = collections.Counter()

    def _count(self, verb: str, kind: Kind) -> None:
        self.calls[f"{verb} {kind.plural}"] += 1

    async def get(self, kind: Kind, name: str, namespace: str | None = None) -> Obj:
        self._count("get", kind)
        return await super().get(kind, name, namespace)

    async def list(self, kind: Kind, namespace: str | None = None, **kw: str) -> list[Obj]:
        self._count("list", kind)
        return await super().list(kind, namespace, **kw)

    async def patch(self, kind: Kind, name: str, patch: Obj, *a: Any, **kw: Any) -> Obj:
        self._count("patch", kind)
        return await super().patch(kind, name, patch, *a, **kw)

    async def patch_ops(self, kind: Kind, name: str, ops: list[Obj]) -> Obj:
        self._count("patch", kind)
        return await super().patch_ops(kind, name, ops)

    async def create(self, kind: Kind, obj: Obj) -> Obj:
        self._count("create", kind)
        return await super().create(kind, obj)

    async def apply(self, kind: Kind, obj: Obj) -> Obj:
        self._count("apply", kind)
        meta = obj["metadata"]
        current = self.objects.get(self._key(kind, meta["name"], meta.get("namespace")))
        return self.put(kind, merge(current or {}, obj))


def node(i: int) -> Obj:
    return {
        "metadata": {"name": f"n{i}", "uid": f"u{i}", "labels": {"cocoon.dev/tee": "sev-snp"}},
        "spec": {},
        "status": {"capacity": {"nvidia.com/gpu": "8"}},
    }


def watched(kube: FakeKube) -> Views:
    """The replica's views, loaded from `kube` and fed by its changes, as a list-and-watch."""
    view = Views()
    informers = {i.kind.plural: i for i in view.informers()}
    for (plural, _, _), obj in kube.objects.items():
        informers[plural].feed(obj)
    kube.watchers.append(lambda kind, obj, event: informers[kind.plural].feed(obj, event))
    for informer in informers.values():
        informer.synced.set()
    return view


def memo_for(kube: CountingKube) -> kopf.Memo:
    memo = kopf.Memo()
    memo.kube = kube
    memo.views = watched(kube)
    memo.caches = memo.views.caches()
    memo.attestation = AttestationState("cocoon-system", "agent", False, keys.generate())
    memo.attestation.policies = PolicyCache(memo.views.policies.store)
    return memo


async def test_a_settled_fleet_costs_no_call_per_pass() -> None:
    kube = CountingKube()
    kube.put(ATTESTATION_POLICIES, {"metadata": {"name": "default"}, "spec": {}})
    for i in range(FLEET):
        kube.put(NODES, node(i))
    memo = memo_for(kube)

    await nodes.resync(memo, PASS)  # discovery: AttestedNodes, challenges, taints
    assert kube.calls["create attestednodes"] == FLEET  # a plain create: no apply
    assert kube.calls["apply attestednodes"] == 0
    challenged = [a for a in await kube.list(ATTESTED_NODES) if a["status"].get("challenge")]
    assert len(challenged) == FLEET
    tainted = [n for n in await kube.list(NODES) if n["spec"].get("taints")]
    assert len(tainted) == FLEET

    kube.calls.clear()
    await nodes.resync(memo, PASS)  # nothing is due: challenges outstanding, effects in place
    assert kube.calls == {}

    # one node's challenge expires: that node, and only it, is read and written
    name = "n7"
    body = await FakeKube.get(kube, ATTESTED_NODES, name)
    past = (utcnow() - timedelta(seconds=1)).isoformat()
    body["status"]["challenge"]["expiresAt"] = past
    kube.objects[kube._key(ATTESTED_NODES, name, None)] = body
    memo.caches.attested.put(body)
    kube.calls.clear()
    await nodes.resync(memo, PASS)
    assert kube.calls == {"patch attestednodes": 1}  # the write returns the object: no read
    fresh = await FakeKube.get(kube, ATTESTED_NODES, name)
    assert fresh["status"]["challenge"]["nonce"] != body["status"]["challenge"]["nonce"]
    assert memo.caches.attested.get(name) == fresh


async def test_a_stale_view_costs_one_read_and_decides_on_the_live_object() -> None:
    kube = CountingKube()
    kube.put(ATTESTATION_POLICIES, {"metadata": {"name": "default"}, "spec": {}})
    kube.put(NODES, node(1))
    memo = memo_for(kube)
    await nodes.resync(memo, PASS)
    kube.watchers.clear()  # from here the view no longer hears of changes
    live = await FakeKube.get(kube, ATTESTED_NODES, "n1")
    issued = live["status"]["challenge"]["nonce"]
    await kube.patch(ATTESTED_NODES, "n1", {"metadata": {"labels": {"touched": "yes"}}})
    stale = memo.caches.attested.get("n1")
    assert stale is not None
    stale["status"]["challenge"]["expiresAt"] = (utcnow() - timedelta(seconds=1)).isoformat()
    kube.calls.clear()
    await nodes.reconcile("n1", memo)
    # the write from the stale copy conflicts; the live object is read and decided on again:
    # its challenge has not expired, so nothing more is written
    assert kube.calls == {"patch attestednodes": 1, "get attestednodes": 1}
    after = await FakeKube.get(kube, ATTESTED_NODES, "n1")
    assert after["status"]["challenge"]["nonce"] == issued


class VerdictDuringPass(CountingKube):
    """While the pass re-applies n0's AttestedNode, n1's verdict and labels land (the evidence
    route, between the pass's start and n1's turn)."""

    memo: kopf.Memo
    armed = False

    async def apply(self, kind: Kind, obj: Obj) -> Obj:
        applied = await super().apply(kind, obj)
        if self.armed and obj["metadata"]["name"] == "n0":
            verified = await self.patch(
                ATTESTED_NODES,
                "n1",
                {"status": {"verdict": "Verified", "expiresAt": "2999-01-01T00:00:00+00:00"}},
                subresource="status",
            )
            self.memo.caches.attested.put(verified)
            live = await FakeKube.get(self, NODES, "n1")
            self.memo.caches.nodes.put(await nodes.apply_effects(self, live, verified))
        return applied


async def test_the_pass_decides_on_each_node_as_it_is_at_its_turn() -> None:
    """A copy taken when the pass began is stale by the node's turn at fleet scale: deciding on
    it wrote a verified node's effects again, failed the write's test and cost a re-read."""
    kube = VerdictDuringPass()
    kube.put(ATTESTATION_POLICIES, {"metadata": {"name": "default"}, "spec": {}})
    for i in range(2):
        kube.put(NODES, node(i))
    memo = kube.memo = memo_for(kube)
    await nodes.resync(memo, PASS)
    memo.caches.attested.remove({"metadata": {"name": "n0"}})  # n0 is discovered once more
    kube.armed = True
    kube.calls.clear()
    await nodes.resync(memo, loops.Schedule("attestation", 1, 5, concurrency=1))
    assert kube.calls["get nodes"] == 0  # no re-read: the pass never wrote from a stale copy
    assert kube.calls["patch nodes"] == 1  # n1's labels, once, by the hook
    n1 = await FakeKube.get(kube, NODES, "n1")
    assert n1["metadata"]["labels"]["cocoon.dev/attested"] == "true"
