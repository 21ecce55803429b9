"""What every replica's API checks callers against, in memory: the InferencePools (their
registered meters) and the PaymentChannels (their payer keys), each kept by a list-and-watch.

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from cocoon.api.common import utcnow
from cocoon.api.inferencepool import InferencePoolStatus, MeterRecord
from cocoon.controllers import api_guard
from cocoon.controllers.cache import Store, watch
from cocoon.kube import INFERENCE_POOLS, PAYMENT_CHANNELS, Kind, Kube, Obj

log = logging.getLogger(__name__)


class _Relist(Exception):
    """The watch cannot continue from where it is (410 Gone): list again."""


@dataclass
class Informer:
    """One kind's objects in every namespace, as a list followed by a watch."""

    kind: Kind
    store: Store = field(default_factory=Store)
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    retry_seconds: float = 2.0

    def feed(self, obj: Mapping[str, Any], event_type: str | None = None) -> None:
        """One watch event, or an object one of our own writes returned."""
        watch(self.store, obj, event_type)

    async def run(self, kube: Kube) -> None:
        while True:
            try:
                items, version = await kube.list_versioned(self.kind)
                self.store.replace(items)
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
            if kind != "BOOKMARK":
                self.feed(obj, kind)
        return version


@dataclass
class Views:
    pools: Informer = field(default_factory=lambda: Informer(INFERENCE_POOLS))
    channels: Informer = field(default_factory=lambda: Informer(PAYMENT_CHANNELS))

    @property
    def ready(self) -> bool:
        return self.pools.synced.is_set() and self.channels.synced.is_set()

    def start(self, kube: Kube) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(i.run(kube)) for i in (self.pools, self.channels)]

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
