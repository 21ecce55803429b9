"""The attestation pass against an in-memory API server: once the fleet is settled, a pass costs
one LIST of policies, whatever the fleet's size; a node that changes costs its own reads."""

from __future__ import annotations

import collections
from datetime import timedelta
from typing import Any

import kopf

from cocoon import keys
from cocoon.api.common import utcnow
from cocoon.controllers import cache, loops, nodes
from cocoon.controllers.attestednode import AttestationState
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


def memo_for(kube: CountingKube) -> kopf.Memo:
    memo = kopf.Memo()
    memo.kube = kube
    memo.caches = cache.Caches()
    memo.attestation = AttestationState("cocoon-system", "agent", False, keys.generate())
    return memo


async def test_a_settled_fleet_costs_one_call_per_pass() -> None:
    kube = CountingKube()
    kube.put(ATTESTATION_POLICIES, {"metadata": {"name": "default"}, "spec": {}})
    for i in range(FLEET):
        kube.put(NODES, node(i))
    memo = memo_for(kube)

    await nodes.resync(memo, PASS)  # discovery: AttestedNodes, challenges, taints
    assert kube.calls["apply attestednodes"] == FLEET
    challenged = [a for a in await kube.list(ATTESTED_NODES) if a["status"].get("challenge")]
    assert len(challenged) == FLEET
    tainted = [n for n in await kube.list(NODES) if n["spec"].get("taints")]
    assert len(tainted) == FLEET

    kube.calls.clear()
    await nodes.resync(memo, PASS)  # nothing is due: challenges outstanding, effects in place
    assert kube.calls == {"list attestationpolicies": 1}

    # one node's challenge expires: that node, and only it, is read and written
    name = "n7"
    body = await FakeKube.get(kube, ATTESTED_NODES, name)
    past = (utcnow() - timedelta(seconds=1)).isoformat()
    body["status"]["challenge"]["expiresAt"] = past
    kube.objects[kube._key(ATTESTED_NODES, name, None)] = body
    memo.caches.attested.put(body)
    kube.calls.clear()
    await nodes.resync(memo, PASS)
    assert kube.calls == {
        "list attestationpolicies": 1,
        "get attestednodes": 2,  # the live object before deciding again, and after the write
        "patch attestednodes": 1,
    }
    fresh = await FakeKube.get(kube, ATTESTED_NODES, name)
    assert fresh["status"]["challenge"]["nonce"] != body["status"]["challenge"]["nonce"]
