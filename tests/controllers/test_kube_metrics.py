"""The API request counter's resource label: a resource, never an object or namespace name."""

from __future__ import annotations

import pytest

from cocoon.kube import resource_of


@pytest.mark.parametrize(
    ("path", "resource"),
    [
        ("/api/v1/nodes", "nodes"),
        ("/api/v1/nodes/node-1", "nodes"),
        ("/apis/cocoon.dev/v1alpha1/attestednodes/a/status", "attestednodes/status"),
        ("/api/v1/namespaces/team-a/pods", "pods"),
        ("/api/v1/namespaces/team-a/pods/p", "pods"),
        ("/apis/coordination.k8s.io/v1/namespaces/x/leases/l", "leases"),
        ("/apis/authentication.k8s.io/v1/tokenreviews", "tokenreviews"),
        ("/api/v1/namespaces/team-a", "namespaces"),
        ("/api/v1", "unknown"),
    ],
)
def test_resource_of(path: str, resource: str) -> None:
    assert resource_of(path) == resource
