"""Read this node's challenge from its AttestedNode: the agent's only access to the API server.

The agent may get/list/watch AttestedNodes and nothing else, so it can see the nonce the operator
issued but never write a verdict. Polling a single object is cheap and survives API-server
restarts without watch bookkeeping.
"""

from __future__ import annotations

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from cocoon.agent.loop import FetchError
from cocoon.api.attestednode import Challenge
from cocoon.kube import ATTESTED_NODES, Kube, Obj


def parse_challenge(obj: Obj | None) -> Challenge | None:
    """The outstanding challenge of an AttestedNode object, None when there is none."""
    status = (obj or {}).get("status") or {}
    raw = status.get("challenge")
    if not raw:
        return None
    try:
        return Challenge.model_validate(raw)
    except ValidationError as exc:
        raise FetchError(f"the AttestedNode's status.challenge is malformed: {exc}") from None


class KubeChallenges:
    """A `FetchChallenge` reading AttestedNode `node` through the Kubernetes API."""

    def __init__(self, kube: Kube, node: str) -> None:
        self._kube = kube
        self._node = node

    async def __call__(self) -> Challenge | None:
        try:
            obj = await self._kube.get_or_none(ATTESTED_NODES, self._node)
        except ApiException as exc:
            hint = (
                ": the agent's ServiceAccount needs get on attestednodes.cocoon.dev"
                if exc.status == 403
                else ""
            )
            raise FetchError(f"reading AttestedNode {self._node}: HTTP {exc.status}{hint}") from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise FetchError(f"reading AttestedNode {self._node}: {exc}") from exc
        if obj is None:
            raise FetchError(
                f"AttestedNode {self._node} does not exist: the operator creates it for nodes "
                "labelled cocoon.dev/tee (check --node and the node's labels)"
            )
        return parse_challenge(obj)
