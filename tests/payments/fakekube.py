"""An in-memory stand-in for `cocoon.kube.Kube`: JSON merge patches, JSON patches (RFC 6902,
a failed `test` answers 422), resourceVersion preconditions and 409s on conflicting creates,
the semantics the controllers rely on.

Every API call is recorded in `api_calls` (verb, resource), and every change is passed to the
`watchers` as a watch event, so a test can feed the API's in-memory views and count what a
request cost the API server."""

from __future__ import annotations

import copy
import itertools
import uuid
from collections.abc import Callable
from typing import Any

import jsonpatch
from kubernetes_asyncio.client.exceptions import ApiException

from cocoon.controllers.views import Views
from cocoon.kube import EVENTS, INFERENCE_POOLS, PAYMENT_CHANNELS, Kind, NotFound, Obj


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.events: list[Obj] = []
        self.status_writes = 0
        self.api_calls: list[tuple[str, str]] = []
        self.watchers: list[Callable[[Kind, Obj, str], None]] = []
        self._rv = itertools.count(1)

    def _changed(self, kind: Kind, obj: Obj, event: str = "MODIFIED") -> None:
        for watcher in self.watchers:
            watcher(kind, copy.deepcopy(obj), event)

    def _key(self, kind: Kind, name: str, namespace: str | None) -> tuple[str, str, str]:
        return (kind.plural, namespace or "", name)

    def put(self, kind: Kind, obj: Obj) -> Obj:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("generation", 1)
        meta["resourceVersion"] = str(next(self._rv))
        self.objects[self._key(kind, meta["name"], meta.get("namespace"))] = obj
        self._changed(kind, obj)
        return copy.deepcopy(obj)

    async def get(self, kind: Kind, name: str, namespace: str | None = None) -> Obj:
        self.api_calls.append(("get", kind.plural))
        try:
            return copy.deepcopy(self.objects[self._key(kind, name, namespace)])
        except KeyError:
            raise NotFound(kind.path(namespace, name)) from None

    async def get_or_none(self, kind: Kind, name: str, namespace: str | None = None) -> Obj | None:
        try:
            return await self.get(kind, name, namespace)
        except NotFound:
            return None

    async def list(
        self, kind: Kind, namespace: str | None = None, *, labels: str = "", fields: str = ""
    ) -> list[Obj]:
        self.api_calls.append(("list", kind.plural))
        # equality selectors (k=v,...) are honoured; set-based ones are not evaluated here
        terms = [t for t in labels.split(",") if t]
        simple = all("=" in t and "!=" not in t and " " not in t for t in terms)
        wanted = dict(t.split("=", 1) for t in terms) if simple else {}
        return [
            copy.deepcopy(o)
            for (plural, ns, _), o in self.objects.items()
            if plural == kind.plural
            and (namespace is None or ns == namespace)
            and wanted.items() <= ((o.get("metadata") or {}).get("labels") or {}).items()
        ]

    async def patch(
        self,
        kind: Kind,
        name: str,
        patch: Obj,
        namespace: str | None = None,
        *,
        subresource: str = "",
    ) -> Obj:
        self.api_calls.append(("patch", kind.plural + (f"/{subresource}" if subresource else "")))
        key = self._key(kind, name, namespace)
        if key not in self.objects:
            raise NotFound(kind.path(namespace, name))
        current = self.objects[key]
        wanted = (patch.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        if subresource == "status":
            self.status_writes += 1
            patch = {"status": patch.get("status")}
        else:
            patch = {k: v for k, v in patch.items() if k != "status"}
        updated = merge(current, patch)
        updated["metadata"]["resourceVersion"] = str(next(self._rv))
        self.objects[key] = updated
        self._changed(kind, updated)
        return copy.deepcopy(updated)

    async def patch_ops(self, kind: Kind, name: str, ops: list[Obj]) -> Obj:
        self.api_calls.append(("patch", kind.plural))
        key = self._key(kind, name, None)
        if key not in self.objects:
            raise NotFound(kind.path(None, name))
        try:
            updated = jsonpatch.apply_patch(self.objects[key], ops)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise ApiException(status=422, reason=str(exc)) from exc
        updated["metadata"]["resourceVersion"] = str(next(self._rv))
        self.objects[key] = updated
        self._changed(kind, updated)
        return copy.deepcopy(updated)

    async def create(self, kind: Kind, obj: Obj) -> Obj:
        self.api_calls.append(("create", kind.plural))
        if kind == EVENTS:
            self.events.append(obj)
            return obj
        meta = obj["metadata"]
        if self._key(kind, meta["name"], meta.get("namespace")) in self.objects:
            raise ApiException(status=409, reason="AlreadyExists")
        return self.put(kind, obj)

    async def delete(self, kind: Kind, name: str, namespace: str | None = None) -> None:
        self.api_calls.append(("delete", kind.plural))
        gone = self.objects.pop(self._key(kind, name, namespace), None)
        if gone is not None:
            self._changed(kind, gone, "DELETED")


def views_of(kube: FakeKube) -> Views:
    """The API's in-memory views, loaded from and kept current with `kube` like a watch."""
    view = Views()
    informers = {INFERENCE_POOLS.plural: view.pools, PAYMENT_CHANNELS.plural: view.channels}
    for (plural, _, _), obj in kube.objects.items():
        if plural in informers:
            informers[plural].feed(obj)
    kube.watchers.append(
        lambda kind, obj, event: informers[kind.plural].feed(obj, event)
        if kind.plural in informers else None
    )
    view.pools.synced.set()
    view.channels.synced.set()
    return view
