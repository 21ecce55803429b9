"""`cocoon uninstall`: what `helm uninstall` runs first (a pre-delete hook Job under the operator's
ServiceAccount), because once the operator is gone nothing expires what it vouched for.

1. The operator's Deployment is scaled to zero and its pods waited out, so no leader relabels a
   node or re-adds a finalizer behind this Job.
2. Every AttestedNode is deleted and its Node's labels and taints released (`lifecycle.released`,
   as for a node that stops being a TEE node): no node keeps `cocoon.dev/attested=true` or a
   Verified verdict with nothing to expire it.
3. Every pool Deployment the operator rendered is scaled to zero: with no operator, nobody
   renews its meters' registration or settles its usage. InferencePools stay (the CRDs are kept);
   a reinstalled operator renders them again at their replicas.
4. The operator's finalizer leaves every PaymentChannel, so deleting one (or its namespace)
   never waits forever. Channels stay open on chain with what was already claimed; a
   PaymentChannel deleted before the uninstall is closed and withdrawn as usual.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
from typing import Any

from cocoon.controllers.nodes import effects_patch
from cocoon.kube import ATTESTED_NODES, DEPLOYMENTS, NODES, PAYMENT_CHANNELS, PODS, Kube, Obj
from cocoon.placement.labels import MANAGED_BY, OPERATOR_NAME

FINALIZER = "cocoon.dev/finalizer"  # kopf's, as the operator configures it (controllers.run)
POOL_SELECTOR = f"{MANAGED_BY}={OPERATOR_NAME}"
log = logging.getLogger("cocoon.uninstall")


def finalizer_patch(obj: Obj) -> Obj | None:
    """The merge patch that drops the operator's finalizer, guarded by the resourceVersion."""
    meta = obj["metadata"]
    finalizers = list(meta.get("finalizers") or [])
    if FINALIZER not in finalizers:
        return None
    kept = [f for f in finalizers if f != FINALIZER]
    return {"metadata": {"finalizers": kept or None, "resourceVersion": meta["resourceVersion"]}}


def scale_patch(deployment: Obj) -> Obj | None:
    replicas = (deployment.get("spec") or {}).get("replicas")
    return None if replicas == 0 else {"spec": {"replicas": 0}}


async def stop_operator(kube: Kube, namespace: str, name: str) -> None:
    """Scale to zero, then wait (under the caller's deadline) until no operator pod is left."""
    deployment = await kube.get_or_none(DEPLOYMENTS, name, namespace)
    if deployment is None:
        return
    if (patch := scale_patch(deployment)) is not None:
        await kube.patch(DEPLOYMENTS, name, patch, namespace)
    selector = ",".join(
        f"{k}={v}" for k, v in deployment["spec"]["selector"].get("matchLabels", {}).items()
    )
    for _ in itertools.count():
        if not await kube.list(PODS, namespace, labels=selector):
            return
        await asyncio.sleep(1)


async def release_nodes(kube: Kube) -> int:
    released = 0
    for attested in await kube.list(ATTESTED_NODES):
        name = attested["metadata"]["name"]
        await kube.delete(ATTESTED_NODES, name)
        node = await kube.get_or_none(NODES, name)
        if node is not None and (ops := effects_patch(node, None)):
            await kube.patch_ops(NODES, name, ops)
        released += 1
    return released


async def stop_pools(kube: Kube) -> int:
    stopped = 0
    for deployment in await kube.list(DEPLOYMENTS, labels=POOL_SELECTOR):
        meta = deployment["metadata"]
        if (patch := scale_patch(deployment)) is not None:
            await kube.patch(DEPLOYMENTS, meta["name"], patch, meta["namespace"])
            stopped += 1
    return stopped


async def release_channels(kube: Kube) -> int:
    released = 0
    for channel in await kube.list(PAYMENT_CHANNELS):
        meta = channel["metadata"]
        if (patch := finalizer_patch(channel)) is not None:
            await kube.patch(PAYMENT_CHANNELS, meta["name"], patch, meta["namespace"])
            released += 1
    return released


async def uninstall(namespace: str, operator: str) -> dict[str, int]:
    kube = await Kube.connect()
    try:
        await stop_operator(kube, namespace, operator)
        return {
            "nodesReleased": await release_nodes(kube),
            "poolsStopped": await stop_pools(kube),
            "channelsReleased": await release_channels(kube),
        }
    finally:
        await kube.close()


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--operator", required=True, help="the operator's Deployment name")
    parser.add_argument(
        "--namespace",
        default=os.environ.get("COCOON_NAMESPACE", ""),
        help="the operator's namespace (default: $COCOON_NAMESPACE)",
    )
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.namespace:
        log.error("no namespace: pass --namespace or set COCOON_NAMESPACE")
        return 2
    done: dict[str, Any] = asyncio.run(
        asyncio.wait_for(uninstall(args.namespace, args.operator), args.timeout)
    )
    log.info("released: %s", done)
    return 0
