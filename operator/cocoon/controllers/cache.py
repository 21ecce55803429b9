"""Informer-style caches: the latest version of each Node, AttestedNode and AttestationPolicy.

Fed by the replica's list-and-watch informers (`views.py`) and by the objects our own writes
return, so the evidence route and the level-based pass read memory instead of the API server; the
live object is read only when a write conflicts. Nodes are stored slimmed to the fields
attestation uses, which keeps 10,000 of them small.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]
Key = tuple[str, str]


def _version(obj: Mapping[str, Any]) -> int | None:
    value = (obj.get("metadata") or {}).get("resourceVersion")
    return int(value) if isinstance(value, str) and value.isdigit() else None


def newer(current: Mapping[str, Any] | None, candidate: Mapping[str, Any]) -> bool:
    """Whether `candidate` should replace `current`: the watch and our writes race, and an older
    copy must not overwrite a newer one (etcd revisions are integers; anything else wins)."""
    if current is None:
        return True
    old, new = _version(current), _version(candidate)
    return old is None or new is None or new >= old


def slim_node(node: Mapping[str, Any]) -> Obj:
    """What attestation reads of a Node: identity, labels, its spec (taints, and what the
    taint write's guard compares), GPU capacity."""
    meta = node.get("metadata") or {}
    capacity = (node.get("status") or {}).get("capacity") or {}
    return {
        "metadata": {k: meta[k] for k in ("name", "uid", "labels", "resourceVersion") if k in meta},
        "spec": copy.deepcopy(dict(node.get("spec") or {})),
        "status": {"capacity": dict(capacity)},
    }


def without_managed_fields(obj: Mapping[str, Any]) -> Obj:
    """The object as it is, less the server-side apply bookkeeping nobody here reads."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    return {**obj, "metadata": meta}


@dataclass
class Store:
    """One kind's objects by (namespace, name); `slim` shapes what is kept."""

    slim: Callable[[Mapping[str, Any]], Obj] = without_managed_fields
    items: dict[Key, Obj] = field(default_factory=dict)

    @staticmethod
    def key(obj: Mapping[str, Any]) -> Key:
        meta = obj.get("metadata") or {}
        return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))

    def put(self, obj: Mapping[str, Any] | None) -> None:
        if not obj:
            return
        key = self.key(obj)
        if newer(self.items.get(key), obj):
            self.items[key] = self.slim(obj)

    def remove(self, obj: Mapping[str, Any]) -> None:
        self.items.pop(self.key(obj), None)

    def get(self, name: str, namespace: str = "") -> Obj | None:
        return self.items.get((namespace, name))

    def replace(self, objs: list[Obj]) -> None:
        """A fresh list is the whole truth: what it lacks was deleted."""
        self.items = {self.key(o): self.slim(o) for o in objs}

    def __iter__(self) -> Iterator[Obj]:
        return iter(list(self.items.values()))

    def __len__(self) -> int:
        return len(self.items)


@dataclass
class Caches:
    """The attestation side's view of the cluster (kept in kopf's memo)."""

    nodes: Store = field(default_factory=lambda: Store(slim_node))
    attested: Store = field(default_factory=Store)
    policies: Store = field(default_factory=Store)


def watch(store: Store, body: Mapping[str, Any], event_type: str | None) -> None:
    """Apply one watch event to a store."""
    if event_type == "DELETED":
        store.remove(body)
    else:
        store.put(body)
