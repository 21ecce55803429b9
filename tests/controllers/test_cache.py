"""The informer-style store: newest copy wins, deletions drop, Nodes are kept slim."""

from __future__ import annotations

from typing import Any

import pytest

from cocoon.controllers import cache


def obj(name: str, rv: str | None, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, **extra}
    if rv is not None:
        meta["resourceVersion"] = rv
    return {"metadata": meta}


@pytest.mark.parametrize(
    ("current", "candidate", "replaces"),
    [
        (None, "5", True),
        ("5", "6", True),
        ("5", "5", True),
        ("10", "9", False),  # a watch event older than what our own write returned
        ("10", "abc", True),  # not an integer: cannot compare, the newcomer wins
        (None, None, True),
    ],
)
def test_newer(current: str | None, candidate: str | None, replaces: bool) -> None:
    before = None if current is None else obj("n", current)
    assert cache.newer(before, obj("n", candidate)) is replaces


def test_store_keeps_the_newest_and_forgets_deleted() -> None:
    store = cache.Store()
    store.put(obj("a", "10", managedFields=[{"manager": "x"}]))
    store.put(obj("a", "9"))
    assert store.get("a") == obj("a", "10")  # managedFields dropped, the older copy ignored
    cache.watch(store, obj("a", "11"), "DELETED")
    assert store.get("a") is None
    store.put(None)
    assert len(store) == 0


def test_replace_is_the_whole_truth() -> None:
    store = cache.Store()
    store.put(obj("ghost", "1"))
    store.replace([obj("live", "2")])
    assert [o["metadata"]["name"] for o in store] == ["live"]


def test_nodes_are_slim() -> None:
    node = {
        "metadata": {
            "name": "n1",
            "uid": "u",
            "resourceVersion": "3",
            "labels": {"cocoon.dev/tee": "tdx"},
            "annotations": {"big": "x" * 1000},
            "managedFields": [{}],
        },
        "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}], "podCIDR": "10.0.0.0/24"},
        "status": {"capacity": {"nvidia.com/gpu": "8"}, "images": [{"names": ["x"]}]},
    }
    store = cache.Caches().nodes
    store.put(node)
    assert store.get("n1") == {
        "metadata": {
            "name": "n1",
            "uid": "u",
            "labels": {"cocoon.dev/tee": "tdx"},
            "resourceVersion": "3",
        },
        # the whole spec: the taint write's guard compares it with the live one
        "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}], "podCIDR": "10.0.0.0/24"},
        "status": {"capacity": {"nvidia.com/gpu": "8"}},
    }
