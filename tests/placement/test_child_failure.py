"""A child the API server refuses makes the pool say so: Ready=False with the server's message."""

from __future__ import annotations

import json
from typing import Any

import kopf
import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from cocoon.controllers import inferencepool
from cocoon.kube import SERVICES, Kind
from cocoon.placement.render import Settings

QUOTA = 'services "p" is forbidden: exceeded quota: q, requested: services=1, limited: services=0'


class RefusingKube:
    """Accepts everything but Services, which it refuses as the API server would (a quota)."""

    def __init__(self) -> None:
        self.status: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []

    async def apply(self, kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
        if kind is SERVICES:
            error = ApiException(status=403, reason="Forbidden")
            error.body = json.dumps({"kind": "Status", "message": QUOTA})
            raise error
        return obj

    async def patch(self, kind: Kind, name: str, patch: dict[str, Any], *_: Any, **__: Any
                    ) -> dict[str, Any]:
        self.status.append(patch["status"])
        return patch

    async def create(self, kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
        self.events.append(obj)
        return obj


async def test_a_refused_service_sets_ready_false_with_the_api_servers_message() -> None:
    kube = RefusingKube()
    memo = kopf.Memo()
    memo.kube = kube
    memo.settings = Settings()
    body = kopf.Body({
        "apiVersion": "cocoon.dev/v1alpha1", "kind": "InferencePool",
        "metadata": {"name": "p", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {"model": {"name": "add", "repository": {"pvc": {"claimName": "m"}}}},
    })
    with pytest.raises(kopf.TemporaryError):
        await inferencepool.reconcile(body, memo)
    ready = next(c for c in kube.status[-1]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ChildRejected")
    assert "refused the pool's Service" in ready["message"]
    assert QUOTA in ready["message"]
    assert kube.events and kube.events[0]["reason"] == "ChildRejected"
