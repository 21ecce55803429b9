"""Attestation from the watch-fed views: which watch events are work, one policy read per
pass, changes coalesced, and a verdict written from a stale view only to the challenge it
answers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client import REGISTRY

from cocoon.api.common import ConditionStatus
from cocoon.controllers import attestednode, loops, nodes, policies
from cocoon.controllers.cache import Store
from cocoon.controllers.views import Informer
from cocoon.kube import ATTESTATION_POLICIES, ATTESTED_NODES, NODES, Kind, Obj
from tests.controllers.test_attestation_pass import PASS, CountingKube, memo_for, node


def meta(rv: str | None = "1", **labels: str) -> Obj:
    m: Obj = {"name": "n1", "uid": "u1", "labels": labels}
    if rv is not None:
        m["resourceVersion"] = rv
    return m


def slim(rv: str = "1", taints: list[Obj] | None = None, gpus: str = "8", **labels: str) -> Obj:
    return {
        "metadata": meta(rv, **labels),
        "spec": {"taints": taints or []},
        "status": {"capacity": {"nvidia.com/gpu": gpus}},
    }


TAINT = {"key": "cocoon.dev/unattested", "effect": "NoExecute"}


@pytest.mark.parametrize(
    ("before", "after", "work"),
    [
        (None, slim(), True),  # a new node
        (slim(), None, False),  # deleted: its AttestedNode goes by owner reference
        (slim("1"), slim("2"), False),  # a heartbeat: only the version moved
        (slim("1"), slim("1"), False),  # the echo of our own write, already stored
        (slim("1"), slim("2", tee="tdx"), True),  # labels changed
        (slim("1"), slim("2", taints=[TAINT]), True),  # someone changed its taints
        (slim("1"), slim("2", gpus="4"), True),  # GPU capacity changed
    ],
)
def test_which_node_events_are_work(before: Obj | None, after: Obj | None, work: bool) -> None:
    assert nodes.node_changed(before, after) is work


@pytest.mark.parametrize(
    ("before", "after", "work"),
    [
        (None, {"metadata": meta("5")}, True),
        ({"metadata": meta("5")}, None, False),
        ({"metadata": meta("5")}, {"metadata": meta("5")}, False),  # our write's echo
        ({"metadata": meta("5")}, {"metadata": meta("6")}, True),  # another writer
        ({"metadata": meta(None)}, {"metadata": meta(None)}, True),  # unversioned: assume news
    ],
)
def test_which_attested_node_events_are_work(
    before: Obj | None, after: Obj | None, work: bool
) -> None:
    assert nodes.attested_changed(before, after) is work


@pytest.mark.parametrize(
    ("cached", "loaded_at", "viewed", "now", "usable"),
    [
        ("7", 100.0, "7", 110.0, True),
        ("7", 100.0, "8", 110.0, False),  # the policy changed
        ("7", 100.0, None, 110.0, False),  # not in the view: read it
        ("7", 100.0, "7", 130.0, False),  # a pass old: its ConfigMaps are read again
        ("7", 100.0, "7", 99.0, False),  # a clock that went back is no proof of freshness
        (None, 100.0, "7", 110.0, False),
    ],
)
def test_when_a_compiled_policy_is_reused(
    cached: str | None, loaded_at: float, viewed: str | None, now: float, usable: bool
) -> None:
    assert policies.fresh(cached, loaded_at, viewed, now, max_age_s=30) is usable


async def test_a_burst_of_submissions_reads_the_policy_once() -> None:
    kube = CountingKube()
    store = Store()
    store.put(kube.put(ATTESTATION_POLICIES, {"metadata": {"name": "default"}, "spec": {}}))
    cache = policies.PolicyCache(store, max_age_s=30)
    results = await asyncio.gather(*(cache.get(kube, "default", "ns") for _ in range(20)))
    assert {label for _, label in results} == {"default@1"}
    assert kube.calls["get attestationpolicies"] == 0  # the view's object, no GET
    first = results[0][0]
    assert all(policy is first for policy, _ in results)  # compiled once

    store.put(
        kube.put(ATTESTATION_POLICIES, {"metadata": {"name": "default"}, "spec": {"gpu": {}}})
    )
    again, _ = await cache.get(kube, "default", "ns")
    assert again is not first  # a new version is compiled again

    cache.max_age_s = 0.0
    assert (await cache.get(kube, "default", "ns"))[0] is not again  # and so is an old one


async def test_a_policy_missing_from_the_view_is_read_each_time() -> None:
    kube = CountingKube()
    kube.put(ATTESTATION_POLICIES, {"metadata": {"name": "default"}, "spec": {}})
    cache = policies.PolicyCache(Store())
    for _ in range(2):
        await cache.get(kube, "default", "ns")
    assert kube.calls["get attestationpolicies"] == 2


async def test_changes_to_one_object_are_coalesced() -> None:
    seen: list[str] = []
    gate = asyncio.Event()
    counted = {2: asyncio.Event(), 3: asyncio.Event()}

    async def work(name: str) -> None:
        await gate.wait()
        seen.append(name)
        if len(seen) in counted:
            counted[len(seen)].set()

    changes = loops.Dirty(work, loops.Schedule("attestation", 1, 5, concurrency=1))
    for name in ["a", "b", "a", "a", "b"]:
        changes.add(name)
    assert len(changes) == 2
    tasks = changes.start()
    gate.set()
    await asyncio.wait_for(counted[2].wait(), 10)
    changes.add("a")  # changed again after it was worked on: worked on again
    await asyncio.wait_for(counted[3].wait(), 10)
    for task in tasks:
        task.cancel()
    assert seen == ["a", "b", "a"]


async def test_the_leader_acts_on_new_nodes_and_ignores_heartbeats(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kube = CountingKube()
    kube.put(ATTESTATION_POLICIES, {"metadata": {"name": "default"}, "spec": {}})
    memo = memo_for(kube)
    settled: list[str] = []
    settle = nodes.settle
    worked = asyncio.Event()

    async def counted(name: str, memo: Any) -> None:
        settled.append(name)
        await settle(name, memo)
        worked.set()

    monkeypatch.setattr(nodes, "settle", counted)
    tasks = nodes.follow(memo, PASS)
    try:
        kube.put(NODES, node(1))
        await asyncio.wait_for(worked.wait(), 10)
        assert (await kube.get(ATTESTED_NODES, "n1"))["status"]["challenge"]
        tainted = await kube.get(NODES, "n1")
        assert tainted["spec"]["taints"]
        await asyncio.sleep(0.1)  # let the echoes of our own writes arrive
        kube.calls.clear()
        settled.clear()
        worked.clear()
        for beat in range(20):  # kwok's or a kubelet's status heartbeats
            live = kube.objects[kube._key(NODES, "n1", None)]
            kube.put(NODES, {**live, "status": {**live["status"], "beat": beat}})
        await asyncio.sleep(0.2)
        assert kube.calls == {}
        assert settled == []  # not even worked on in memory
        live = kube.objects[kube._key(NODES, "n1", None)]
        kube.put(NODES, {**live, "metadata": {**live["metadata"], "labels": {}}})
        await asyncio.wait_for(worked.wait(), 10)  # its TEE label went: that is work
        assert set(settled) == {"n1"}
        assert await kube.get_or_none(ATTESTED_NODES, "n1") is None  # no TEE: no AttestedNode
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class ConflictOnce(CountingKube):
    """The first status write conflicts, as when the view held an older copy."""

    def __init__(self) -> None:
        super().__init__()
        self.conflicts = 1

    async def patch(self, kind: Kind, name: str, patch: Obj, *a: Any, **kw: Any) -> Obj:
        if kw.get("subresource") == "status" and self.conflicts:
            self.conflicts -= 1
            self._count("patch", kind)
            raise ApiException(status=409)
        return await super().patch(kind, name, patch, *a, **kw)


def challenged_node(nonce: str) -> Obj:
    return {
        "metadata": {"name": "n1"},
        "spec": {"nodeName": "n1", "tee": "sev-snp"},
        "status": {
            "verdict": "Pending",
            "challenge": {
                "nonce": nonce,
                "issuedAt": "2026-01-01T00:00:00+00:00",
                "expiresAt": "2999-01-01T00:00:00+00:00",
            },
        },
    }


FIELDS: Obj = {"verdict": "Verified", "challenge": None}
UPDATES = [("Ready", ConditionStatus.TRUE, "Verified", "ok")]


async def test_a_verdict_from_a_stale_view_is_written_to_the_same_challenge() -> None:
    kube = ConflictOnce()
    nonce = "ab" * 32
    body = kube.put(ATTESTED_NODES, challenged_node(nonce))
    written = await attestednode._store_verdict(kube, body, bytes.fromhex(nonce), FIELDS, UPDATES)
    assert isinstance(written, dict)
    assert written["status"]["verdict"] == "Verified"
    assert kube.calls == {"patch attestednodes": 2, "get attestednodes": 1, "create events": 1}


async def test_a_verdict_for_a_replaced_challenge_is_refused_and_not_written() -> None:
    kube = ConflictOnce()
    old = "ab" * 32
    body = kube.put(ATTESTED_NODES, challenged_node(old))
    kube.put(ATTESTED_NODES, challenged_node("cd" * 32))  # a newer challenge replaced it
    refused = await attestednode._store_verdict(kube, body, bytes.fromhex(old), FIELDS, UPDATES)
    assert isinstance(refused, web.Response)
    assert refused.status == 409
    assert kube.status_writes == 0
    live = kube.objects[kube._key(ATTESTED_NODES, "n1", None)]
    assert live["status"]["verdict"] == "Pending"



def test_listeners_hear_what_a_relist_changed() -> None:
    informer = Informer(NODES)
    informer.relisted([{"metadata": {"name": "kept", "resourceVersion": "1"}},
                       {"metadata": {"name": "gone", "resourceVersion": "1"}}])
    heard: list[tuple[str | None, str | None]] = []

    def version(obj: Obj | None) -> str | None:
        return None if obj is None else str(obj["metadata"]["resourceVersion"])

    def listener(before: Obj | None, after: Obj | None) -> None:
        heard.append((version(before), version(after)))

    informer.listeners.append(listener)
    informer.relisted([{"metadata": {"name": "kept", "resourceVersion": "3"}},
                       {"metadata": {"name": "new", "resourceVersion": "2"}}])
    assert sorted(heard, key=str) == sorted([("1", "3"), (None, "2"), ("1", None)], key=str)
    assert informer.store.get("gone") is None


class Streams:
    """A watch that yields the given events once, then ends."""

    def __init__(self, events: list[Obj]) -> None:
        self.events = events

    async def watch(self, kind: Kind, version: str) -> Any:
        for event in self.events:
            yield event


async def test_watch_events_are_counted_by_resource_and_type() -> None:
    """What reaches the operator of the cluster's churn is measured: every event, a heartbeat
    that changes nothing the operator reads included."""

    def count(kind: str) -> float:
        sample = REGISTRY.get_sample_value(
            "cocoon_watch_events_total", {"resource": "nodes", "type": kind}
        )
        return sample or 0.0

    before = {kind: count(kind) for kind in ("MODIFIED", "BOOKMARK")}
    heartbeat = {"metadata": {"name": "n1", "resourceVersion": "7"}}
    stream = Streams([
        {"type": "MODIFIED", "object": heartbeat},
        {"type": "MODIFIED", "object": {**heartbeat, "metadata": {"name": "n1",
                                                                  "resourceVersion": "8"}}},
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}},
    ])
    informer = Informer(NODES)
    version = await informer._follow(stream, "1")  # type: ignore[arg-type]
    assert version == "9"
    assert count("MODIFIED") - before["MODIFIED"] == 2
    assert count("BOOKMARK") - before["BOOKMARK"] == 1
    assert informer.store.get("n1") is not None

