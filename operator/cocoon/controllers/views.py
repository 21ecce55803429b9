"""What every replica's API checks callers against, in memory: the InferencePools (their
registered meters) and the PaymentChannels (their payer keys), each kept by a list-and-watch;
and what attestation decides on: Nodes (slimmed), AttestedNodes and AttestationPolicies, so the
evidence route and the leader's passes read memory, not the API server, once per submission.

The API authenticates a meter (its receipt key among its pool's live records) or a payer (the
channel's promise key) against this view before it makes any Kubernetes call, so a forged,
badly signed, replayed or unregistered request costs the API server nothing. The view lags the
API server by the watch's latency (milliseconds): a record written a moment ago through another
replica may be unknown here that long, which the meter sees as a 403 and retries. Until the
first lists have arrived the replica is not ready (`/readyz`) and such requests get 503.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import Counter
from pydantic import ValidationError

from cocoon.api.common import utcnow
from cocoon.api.inferencepool import InferencePoolStatus, MeterRecord
from cocoon.controllers import api_guard
from cocoon.controllers.cache import Caches, Store, slim_node, watch
from cocoon.kube import (
    ATTESTATION_POLICIES,
    ATTESTED_NODES,
    INFERENCE_POOLS,
    NODES,
    PAYMENT_CHANNELS,
    Kind,
    Kube,
    Obj,
)

log = logging.getLogger(__name__)

# bounded labels: a resource plural the views follow and a watch event type
WATCH_EVENTS = Counter(
    "cocoon_watch_events_total",
    "Watch events the replica's views received, by resource and type: how much of the cluster's "
    "churn (a kubelet's status heartbeat, another controller's write) reaches the operator.",
    ["resource", "type"],
)


# called with an object's stored copy before and after one event (None: absent)
Listener = Callable[[Obj | None, Obj | None], None]


class _Relist(Exception):
    """The watch cannot continue from where it is (410 Gone): list again."""


@dataclass
class Informer:
    """One kind's objects in every namespace, as a list followed by a watch."""

    kind: Kind
    store: Store = field(default_factory=Store)
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    retry_seconds: float = 2.0
    listeners: list[Listener] = field(default_factory=list)

    def feed(self, obj: Mapping[str, Any], event_type: str | None = None) -> None:
        """One watch event, or an object one of our own writes returned; listeners see the
        stored copy before and after it (the same copy when the event was no news)."""
        key = Store.key(obj)
        before = self.store.items.get(key)
        watch(self.store, obj, event_type)
        if self.listeners:
            after = self.store.items.get(key)
            for listener in self.listeners:
                listener(before, after)

    def relisted(self, items: list[Obj]) -> None:
        """A fresh list is the whole truth; listeners hear of what it changed, added or dropped
        (what a watch that could not continue missed)."""
        before = dict(self.store.items)
        self.store.replace(items)
        if not self.listeners:
            return
        for key, after in self.store.items.items():
            for listener in self.listeners:
                listener(before.pop(key, None), after)
        for gone in before.values():
            for listener in self.listeners:
                listener(gone, None)

    async def run(self, kube: Kube) -> None:
        while True:
            try:
                items, version = await kube.list_versioned(self.kind)
                self.relisted(items)
                self.synced.set()
                while True:
                    version = await self._follow(kube, version)
            except asyncio.CancelledError:
                raise
            except _Relist:
                continue
            except Exception as exc:  # the API server is away: keep the last view, retry
                log.warning(
                    "watch of %s failed; retrying",
                    self.kind.plural,
                    extra={"error": type(exc).__name__},
                )
                await asyncio.sleep(self.retry_seconds)

    async def _follow(self, kube: Kube, version: str) -> str:
        async for event in kube.watch(self.kind, version):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                raise _Relist
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            WATCH_EVENTS.labels(self.kind.plural, str(kind)).inc()
            if kind != "BOOKMARK":
                self.feed(obj, kind)
        return version


@dataclass
class Views:
    pools: Informer = field(default_factory=lambda: Informer(INFERENCE_POOLS))
    channels: Informer = field(default_factory=lambda: Informer(PAYMENT_CHANNELS))
    nodes: Informer = field(default_factory=lambda: Informer(NODES, Store(slim_node)))
    attested: Informer = field(default_factory=lambda: Informer(ATTESTED_NODES))
    policies: Informer = field(default_factory=lambda: Informer(ATTESTATION_POLICIES))

    @property
    def ready(self) -> bool:
        return self.pools.synced.is_set() and self.channels.synced.is_set()

    def informers(self) -> tuple[Informer, ...]:
        return (self.pools, self.channels, self.nodes, self.attested, self.policies)

    def start(self, kube: Kube) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(i.run(kube)) for i in self.informers()]

    def caches(self) -> Caches:
        """Attestation's stores: these views' own, so there is one copy of each object."""
        return Caches(
            nodes=self.nodes.store, attested=self.attested.store, policies=self.policies.store
        )

    def meters(self, pool_ref: str) -> list[MeterRecord]:
        """The pool's unexpired meter records."""
        namespace, _, name = pool_ref.partition("/")
        body = self.pools.store.get(name, namespace) if namespace and "/" not in name else None
        if body is None:
            return []
        try:
            records = InferencePoolStatus.model_validate(body.get("status") or {}).meters
        except ValidationError:
            return []
        now = utcnow()
        return [r for r in records if r.expires_at > now]

    def channel(self, namespace: str, name: str) -> Obj | None:
        return self.channels.store.get(name, namespace)


VIEWS = web.AppKey("views", Views)


def of(request: web.Request) -> Views:
    return request.app[VIEWS]


def attach(app: web.Application, views: Views) -> None:
    """Give the app's handlers the replica's views, and `/readyz` that says when they are
    loaded (once; several areas share them)."""
    if VIEWS in app:
        return
    app[VIEWS] = views

    async def readyz(_: web.Request) -> web.Response:
        if views.ready:
            return web.json_response({"ready": True})
        return not_ready()

    app.router.add_get("/readyz", readyz)


def not_ready() -> web.Response:
    return api_guard.refuse(
        api_guard.Refusal.NOT_READY,
        503,
        "NotReady",
        "this operator replica is still loading its view of the cluster; retry in a few seconds",
        headers={"Retry-After": "2"},
    )
