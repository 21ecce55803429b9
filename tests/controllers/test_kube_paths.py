"""API paths are built from names only: a caller's path parameter that would steer the URL (the
fuzzer's `GET /usage/v1/credit/%3F/0` became a query and a 500) is NotFound and never sent."""

from __future__ import annotations

import pytest

from cocoon.kube import INFERENCE_POOLS, NODES, NotFound


@pytest.mark.parametrize(
    ("namespace", "name", "path"),
    [
        ("dev", "chat", "/apis/cocoon.dev/v1alpha1/namespaces/dev/inferencepools/chat"),
        ("dev", None, "/apis/cocoon.dev/v1alpha1/namespaces/dev/inferencepools"),
        (None, None, "/apis/cocoon.dev/v1alpha1/inferencepools"),
        ("dev", "a.b-c", "/apis/cocoon.dev/v1alpha1/namespaces/dev/inferencepools/a.b-c"),
    ],
)
def test_paths(namespace: str | None, name: str | None, path: str) -> None:
    assert INFERENCE_POOLS.path(namespace, name) == path


@pytest.mark.parametrize(
    ("namespace", "name"),
    [
        ("?", "0"),
        ("dev", "x?watch=true"),
        ("kube-system/secrets", "x"),
        ("..", "x"),
        ("dev", ".."),
        ("dev", "a%2Fb"),
        ("dev", "a#b"),
        ("dev", "a b"),
        ("dev", "a\x00b"),
        ("dev", "a\\b"),
    ],
)
def test_names_that_would_steer_the_url_are_not_found(namespace: str, name: str) -> None:
    with pytest.raises(NotFound):
        INFERENCE_POOLS.path(namespace, name)


def test_cluster_scoped_names_are_checked_too() -> None:
    with pytest.raises(NotFound):
        NODES.path(None, "../secrets")
