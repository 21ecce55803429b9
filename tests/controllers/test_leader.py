"""Leader election on a Lease: the decision table, and two electors racing on one Lease with
the API server's optimistic concurrency (a stale resourceVersion is refused with 409)."""

from __future__ import annotations

import asyncio
import copy
import itertools
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from cocoon.controllers import leader
from cocoon.controllers.leader import Step
from cocoon.kube import Kind

FAST = leader.Timing(lease_s=0.6, renew_deadline_s=0.4, retry_s=0.05)


def lease(holder: str | None, duration: int = 15) -> dict[str, Any]:
    return {"spec": {"holderIdentity": holder, "leaseDurationSeconds": duration}}


@pytest.mark.parametrize(
    ("current", "unchanged_for", "step"),
    [
        (None, 0, Step.CREATE),
        (lease("me"), 100, Step.RENEW),
        (lease("other"), 0, Step.WAIT),
        (lease("other"), 14.9, Step.WAIT),
        (lease("other"), 15, Step.TAKE),  # its holder stopped renewing a whole lease ago
        (lease(None), 0, Step.TAKE),  # released on a clean stop: take it at once
        (lease("other", duration=60), 30, Step.WAIT),  # the Lease's own duration counts
    ],
)
def test_decide(current: dict[str, Any] | None, unchanged_for: float, step: Step) -> None:
    assert leader.decide(current, "me", unchanged_for, lease_s=15) is step


@pytest.mark.parametrize(
    "env",
    [
        {"COCOON_LEASE_SECONDS": "10", "COCOON_LEASE_RENEW_DEADLINE_SECONDS": "10"},
        {"COCOON_LEASE_RETRY_SECONDS": "0"},
    ],
)
def test_timing_refuses_a_deadline_that_could_overlap(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match="retry < renew deadline < lease"):
        leader.Timing.from_env()


class LeaseServer:
    """Just enough of the API server for Leases: create (409 if it exists), conditional PUT."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.versions = itertools.count(1)
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise OSError("connection refused")

    async def get_or_none(self, kind: Kind, name: str, namespace: str | None = None) -> Any:
        self._check()
        return copy.deepcopy(self.lease)

    async def create(self, kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
        self._check()
        if self.lease is not None:
            raise ApiException(status=409)
        self.lease = copy.deepcopy(obj)
        self.lease["metadata"]["resourceVersion"] = str(next(self.versions))
        return copy.deepcopy(self.lease)

    async def replace(self, kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
        self._check()
        assert self.lease is not None
        if obj["metadata"]["resourceVersion"] != self.lease["metadata"]["resourceVersion"]:
            raise ApiException(status=409)
        self.lease = copy.deepcopy(obj)
        self.lease["metadata"]["resourceVersion"] = str(next(self.versions))
        return copy.deepcopy(self.lease)


def elector(server: LeaseServer, identity: str) -> leader.Elector:
    return leader.Elector(server, "ns", "lease", identity, FAST)  # type: ignore[arg-type]


async def test_one_leads_the_other_takes_over_when_it_stops_renewing() -> None:
    server = LeaseServer()
    a, b = elector(server, "a"), elector(server, "b")
    await a.acquire()
    keeper = asyncio.create_task(a.keep())
    waiting = asyncio.create_task(b.acquire())
    await asyncio.sleep(3 * FAST.lease_s)  # many lease durations: a renews, b must not lead
    assert not waiting.done() and not b.leading
    keeper.cancel()  # a dies without releasing (kill -9)
    await asyncio.wait_for(waiting, timeout=5 * FAST.lease_s)
    assert b.leading
    assert server.lease is not None and server.lease["spec"]["holderIdentity"] == "b"
    assert server.lease["spec"]["leaseTransitions"] == 1


async def test_a_leader_that_cannot_renew_stops_before_the_lease_lapses() -> None:
    server = LeaseServer()
    a = elector(server, "a")
    await a.acquire()
    keeper = asyncio.create_task(a.keep())
    server.down = True
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(a.lost.wait(), timeout=5 * FAST.lease_s)
    assert asyncio.get_running_loop().time() - started < FAST.lease_s  # before anyone may take
    assert not a.leading
    await asyncio.wait_for(keeper, timeout=1)


async def test_release_hands_over_at_once() -> None:
    server = LeaseServer()
    a, b = elector(server, "a"), elector(server, "b")
    await a.acquire()
    await a.release()
    assert server.lease is not None and server.lease["spec"]["holderIdentity"] is None
    assert await b.try_once()


class ClosableLeaseServer(LeaseServer):
    """The LeaseServer as the renewing thread's own client."""

    async def close(self) -> None:
        return None


async def until(check: Callable[[], bool]) -> None:
    while True:
        if check():
            return
        await asyncio.sleep(0.01)


def version(server: LeaseServer) -> int:
    assert server.lease is not None
    return int(server.lease["metadata"]["resourceVersion"])


async def test_renewal_apart_goes_on_while_the_operator_loop_is_blocked() -> None:
    server = ClosableLeaseServer()
    a = elector(server, "a")
    await a.acquire()

    async def connect() -> Any:
        return server

    keeper = asyncio.create_task(a.keep_apart(connect))
    first = version(server)
    await until(lambda: version(server) > first)  # the thread renews
    before = version(server)
    # the operator's loop held, as by a burst or a thousand nodes' events at start
    time.sleep(3 * FAST.lease_s)  # noqa: ASYNC251
    assert version(server) >= before + 2  # renewals went on meanwhile
    assert a.leading and not a.lost.is_set()
    a.stop_renewing()
    await asyncio.wait_for(keeper, timeout=5)
    stopped = version(server)
    await a.release()  # nothing renews after the release: a follower may take over at once
    assert server.lease is not None and server.lease["spec"]["holderIdentity"] is None
    assert version(server) == stopped + 1 and not a.lost.is_set()


async def test_a_renewal_thread_that_cannot_renew_makes_the_leader_stop() -> None:
    server = ClosableLeaseServer()
    a = elector(server, "a")
    await a.acquire()

    async def connect() -> Any:
        return server

    keeper = asyncio.create_task(a.keep_apart(connect))
    server.down = True
    await asyncio.wait_for(a.lost.wait(), timeout=5 * FAST.lease_s)
    assert not a.leading
    await asyncio.wait_for(keeper, timeout=5)
