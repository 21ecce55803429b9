"""Leader election on a coordination.k8s.io Lease: one replica runs the controllers and makes
claims, every replica serves the HTTP API.

A Lease rather than kopf peering: peering pauses lower-priority peers but lets equal ones run
side by side, and it needs a cluster-wide CRD; a Lease is the Kubernetes convention (client-go's
leaderelection) and needs one namespaced Role. Expiry is judged by how long *this* replica has
seen the record unchanged, never by comparing clocks across machines. A leader that cannot renew
within RENEW_DEADLINE (shorter than the lease) stops acting before anyone may take over, so two
replicas never act at once; a killed leader is replaced within the lease duration plus one retry.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from cocoon.kube import Kind, Kube, NotFound

log = logging.getLogger(__name__)
LEASES = Kind("coordination.k8s.io", "v1", "leases")
Obj = dict[str, Any]


@dataclass(frozen=True)
class Timing:
    lease_s: float = 15.0  # a follower takes over after seeing no renewal this long
    renew_deadline_s: float = 10.0  # a leader that has not renewed this long stops acting
    retry_s: float = 2.0  # how often followers look and the leader renews

    @classmethod
    def from_env(cls) -> Timing:
        timing = cls(
            lease_s=float(os.environ.get("COCOON_LEASE_SECONDS", cls.lease_s)),
            renew_deadline_s=float(
                os.environ.get("COCOON_LEASE_RENEW_DEADLINE_SECONDS", cls.renew_deadline_s)
            ),
            retry_s=float(os.environ.get("COCOON_LEASE_RETRY_SECONDS", cls.retry_s)),
        )
        if not 0 < timing.retry_s < timing.renew_deadline_s < timing.lease_s:
            raise ValueError("lease timing must satisfy 0 < retry < renew deadline < lease")
        return timing


class Step(StrEnum):
    CREATE = "create"  # no Lease yet
    RENEW = "renew"  # we hold it
    TAKE = "take"  # free, or its holder stopped renewing
    WAIT = "wait"  # someone else holds it and renews


def decide(lease: Obj | None, me: str, unchanged_for_s: float, lease_s: float) -> Step:
    """What to do with the Lease as read now. `unchanged_for_s`: how long this replica has seen
    the same holder and renewTime (0 when it just changed)."""
    if lease is None:
        return Step.CREATE
    spec = lease.get("spec") or {}
    holder = spec.get("holderIdentity") or ""
    if holder == me:
        return Step.RENEW
    duration = float(spec.get("leaseDurationSeconds") or lease_s)
    if not holder or unchanged_for_s >= duration:
        return Step.TAKE
    return Step.WAIT


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Elector:
    """Acquire, keep and release one Lease; `lost` is set when leadership ends."""

    def __init__(
        self, kube: Kube, namespace: str, name: str, identity: str, timing: Timing
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timing = timing
        self.leading = False
        self.lost = asyncio.Event()
        self._seen: tuple[str, str] | None = None
        self._seen_at = 0.0
        self._renewed_at = 0.0
        self._stop = threading.Event()

    @classmethod
    def from_env(cls, kube: Kube) -> Elector:
        identity = f"{os.environ.get('HOSTNAME') or socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        return cls(
            kube,
            os.environ.get("COCOON_NAMESPACE", "cocoon-system"),
            os.environ.get("COCOON_LEASE_NAME", "cocoon-operator"),
            identity,
            Timing.from_env(),
        )

    def _clock(self) -> float:
        return asyncio.get_running_loop().time()

    def _unchanged_for(self, lease: Obj | None) -> float:
        spec = (lease or {}).get("spec") or {}
        record = (str(spec.get("holderIdentity") or ""), str(spec.get("renewTime") or ""))
        if record != self._seen:
            self._seen, self._seen_at = record, self._clock()
        return self._clock() - self._seen_at

    def _manifest(self, lease: Obj | None, step: Step) -> Obj:
        spec = dict((lease or {}).get("spec") or {})
        now = _now()
        if step is not Step.RENEW:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (
                1 if lease is not None else 0
            )
        spec |= {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.timing.lease_s),
            "renewTime": now,
        }
        meta: Obj = {"name": self.name, "namespace": self.namespace}
        if lease is not None:  # optimistic concurrency: two takers, one wins
            meta["resourceVersion"] = lease["metadata"]["resourceVersion"]
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": spec,
        }

    async def try_once(self) -> bool:
        """One look at the Lease; True when we hold it afterwards."""
        lease = await self.kube.get_or_none(LEASES, self.name, self.namespace)
        step = decide(lease, self.identity, self._unchanged_for(lease), self.timing.lease_s)
        if step is Step.WAIT:
            return False
        manifest = self._manifest(lease, step)
        try:
            if step is Step.CREATE:
                await self.kube.create(LEASES, manifest)
            else:
                await self.kube.replace(LEASES, manifest)
        except ApiException as exc:
            if exc.status in (409, 422):
                return False  # someone else wrote first
            raise
        self._renewed_at = self._clock()
        if step is not Step.RENEW:
            log.info("leading as %s (%s)", self.identity, step.value)
        return True

    async def acquire(self) -> None:
        """Wait until this replica leads."""
        log.info("waiting to lead as %s (Lease %s/%s)", self.identity, self.namespace, self.name)
        while True:
            try:
                if await self.try_once():
                    self.leading = True
                    return
            except (ApiException, NotFound, OSError, TimeoutError) as exc:
                log.warning("lease check failed (%s); retrying", type(exc).__name__)
            await asyncio.sleep(self.timing.retry_s)

    async def keep(self) -> None:
        """Renew until it fails for longer than the renew deadline, then set `lost`."""
        while self.leading:
            await asyncio.sleep(self.timing.retry_s)
            await self.renew_once()

    async def renew_once(self) -> None:
        """Renew; past the renew deadline without a renewal, lose."""
        try:
            async with asyncio.timeout(self.timing.renew_deadline_s / 2):
                renewed = await self.try_once()
        except (ApiException, NotFound, OSError, TimeoutError) as exc:
            log.warning("lease renewal failed (%s)", type(exc).__name__)
            renewed = False
        if not renewed and self._clock() - self._renewed_at >= self.timing.renew_deadline_s:
            log.error("lost the lease %s/%s; stopping the controllers", self.namespace, self.name)
            self._lose()

    async def keep_apart(self, connect: Callable[[], Awaitable[Kube]]) -> None:
        """`keep`, from a thread with its own event loop and API client (`connect`): the
        operator's loop, busy with a thousand nodes' events at start or a burst of submissions,
        cannot delay a renewal. Returns when leadership is lost (then `lost` is set) or, after
        `stop_renewing`, within one retry (before `release`, so nothing renews after it)."""
        main = asyncio.get_running_loop()

        async def renew() -> None:
            kube = await connect()
            apart = Elector(kube, self.namespace, self.name, self.identity, self.timing)
            apart.leading = True
            apart._renewed_at = apart._clock()
            try:
                while apart.leading:
                    await asyncio.sleep(self.timing.retry_s)
                    if self._stop.is_set():
                        return
                    await apart.renew_once()
            finally:
                await kube.close()
            main.call_soon_threadsafe(self._lose)

        await asyncio.to_thread(asyncio.run, renew())

    def stop_renewing(self) -> None:
        self._stop.set()

    def _lose(self) -> None:
        self.leading = False
        self.lost.set()

    async def release(self) -> None:
        """On a clean stop, free the Lease so a follower takes over at once."""
        if not self.leading:
            return
        self.leading = False
        lease = await self.kube.get_or_none(LEASES, self.name, self.namespace)
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
            return
        lease["spec"] = {**lease["spec"], "holderIdentity": None, "renewTime": _now()}
        try:
            await self.kube.replace(LEASES, lease)
        except ApiException:
            log.warning("could not release the lease; a follower takes over when it lapses")
