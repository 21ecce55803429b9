"""Nodes' side of attestation: discovery, the labels and taints a verdict implies, and the
level-based pass that challenges, expires and re-checks every node from the informer caches.

The evidence route (attestednode.py) appraises; this module keeps every node's state moving
without it: new nodes get an AttestedNode, verdicts lapse on time, challenges are issued.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

import kopf
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from cocoon.api.attestationpolicy import AttestationPolicySpec
from cocoon.api.attestednode import AttestedNodeSpec, AttestedNodeStatus
from cocoon.api.common import utcnow
from cocoon.api.inferencepool import TeeType
from cocoon.attestation import lifecycle, upkeep
from cocoon.controllers import cache, loops
from cocoon.controllers import status as status_writer
from cocoon.kube import ATTESTATION_POLICIES, ATTESTED_NODES, NODES, Kube

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from cocoon.controllers.attestednode import AttestationState

Obj = dict[str, Any]


# -- discovery -----------------------------------------------------------------------------


def attested_node_manifest(node: Obj, spec: AttestedNodeSpec) -> Obj:
    meta = node["metadata"]
    return {
        "apiVersion": "cocoon.dev/v1alpha1",
        "kind": "AttestedNode",
        "metadata": {
            "name": meta["name"],
            "labels": {"app.kubernetes.io/managed-by": "cocoon-operator"},
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Node", "name": meta["name"], "uid": meta["uid"]}
            ],
        },
        "spec": spec.to_api(),
    }


async def discover(node: Obj, kube: Kube, existing: Obj | None) -> tuple[Obj | None, Obj | None]:
    """Every TEE node gets an AttestedNode and stays tainted until it is verified.

    `existing` is the node's AttestedNode as the caller read it (None when there is none).
    Returns the AttestedNode now (None when the node declares no TEE) and the patched Node
    (None when it did not change), for the caches."""
    labels = node["metadata"].get("labels") or {}
    tee = lifecycle.tee_of(labels)
    name = node["metadata"]["name"]
    if tee is None:
        if existing is None:
            return None, None
        await kube.delete(ATTESTED_NODES, name)
        return None, await apply_effects(kube, node, None)
    spec = AttestedNodeSpec(node_name=name, tee=tee, expected_gpus=lifecycle.gpu_count(node))
    if existing is not None:
        spec = spec.model_copy(
            update={"policy_name": existing["spec"].get("policyName", "default")}
        )
    if existing is None or existing.get("spec") != spec.to_api():
        existing = await kube.apply(ATTESTED_NODES, attested_node_manifest(node, spec))
    return existing, await apply_effects(kube, node, existing)


def effects_patch(node: Obj, attested: Obj | None) -> Obj:
    """The merge patch that brings the Node's labels and taints in line with the verdict."""
    meta = node["metadata"]
    if attested is None:
        wanted = lifecycle.released()
    else:
        status = AttestedNodeStatus.model_validate(attested.get("status") or {})
        gpus = sum(1 for d in status.devices if d.kind == "nvgpu" and d.status == "affirming")
        tee = TeeType(attested["spec"]["tee"])
        wanted = lifecycle.effects(status.verdict, tee, gpus)
    labels = lifecycle.label_patch(meta.get("labels") or {}, wanted.labels)
    taints = lifecycle.merged_taints((node.get("spec") or {}).get("taints") or [], wanted.taints)
    patch: Obj = {}
    if labels:
        patch["metadata"] = {"labels": labels}
    if taints is not None:
        patch.setdefault("metadata", {})["resourceVersion"] = meta["resourceVersion"]
        patch["spec"] = {"taints": taints}
    return patch


async def apply_effects(kube: Kube, node: Obj, attested: Obj | None) -> Obj | None:
    """Labels and taints that follow from the verdict; written only when they change.

    `node` may be a cached copy: a stale one makes the taint write conflict (it carries the
    resourceVersion), and the live Node is then read and decided on once more."""
    for attempt in range(2):
        patch = effects_patch(node, attested)
        if not patch:
            return None
        try:
            return await kube.patch(NODES, node["metadata"]["name"], patch)
        except ApiException as exc:
            if exc.status != 409 or attempt:
                raise
            node = await kube.get(NODES, node["metadata"]["name"])
    return None


async def apply_effects_or_defer(kube: Kube, node: Obj, attested: Obj) -> Obj | None:
    """`apply_effects` right after a verdict was written: a Node that keeps changing under us
    (kwok's or a kubelet's heartbeats at fleet scale) is left to the AttestedNode's watch event
    and the next pass, which apply the same effects; the caller's verdict stands either way,
    so it must not answer 500 for it."""
    try:
        return await apply_effects(kube, node, attested)
    except ApiException as exc:
        if exc.status != 409:
            raise
        log.info(
            "node %s changed twice while its labels were written; the pass applies them",
            node["metadata"]["name"],
        )
        return None


# -- the level-based pass ---------------------------------------------------------------------


def caches(memo: kopf.Memo) -> cache.Caches:
    found: cache.Caches | None = memo.get("caches")
    if found is None:
        found = memo.caches = cache.Caches()
    return found


def cached_policy(memo: kopf.Memo, name: str) -> AttestationPolicySpec | None:
    obj = caches(memo).policies.get(name)
    if obj is None:
        return None
    try:
        return AttestationPolicySpec.model_validate(obj.get("spec") or {})
    except ValidationError:
        return None


async def reconcile(name: str, memo: kopf.Memo) -> None:
    """Lapse, challenge or report, decided on the cached objects; the live AttestedNode is read
    (and decided on again) only when something is due, and node effects only when they change."""
    kube: Kube = memo.kube
    state: AttestationState = memo.attestation
    store = caches(memo)
    async with state.locks[name]:
        body, node = store.attested.get(name), store.nodes.get(name)
        if body is None or node is None:
            return
        policy_name = str(body["spec"].get("policyName", "default"))
        status = AttestedNodeStatus.model_validate(body.get("status") or {})
        now = utcnow()
        if upkeep.plan(status, cached_policy(memo, policy_name), policy_name, now).writes:
            body = await kube.get_or_none(ATTESTED_NODES, name)
            if body is None:
                store.attested.remove({"metadata": {"name": name}})
                return
            store.attested.put(body)
            status = AttestedNodeStatus.model_validate(body.get("status") or {})
            step = upkeep.plan(status, cached_policy(memo, policy_name), policy_name, now)
            if step.writes:
                try:
                    await status_writer.write(
                        kube, ATTESTED_NODES, body, step.fields, step.updates, precondition=True
                    )
                except ApiException as exc:
                    if exc.status != 409:
                        raise
                    return  # another replica wrote first (evidence); decided again next time
                body = await kube.get(ATTESTED_NODES, name)
                store.attested.put(body)
        store.nodes.put(await apply_effects(kube, node, body))


RELIST_S = float(os.environ.get("COCOON_RELIST_SECONDS", "600"))


async def refresh(memo: kopf.Memo) -> None:
    """Policies every pass (one LIST, however large the fleet); Nodes and AttestedNodes only on
    the first pass and every RELIST_S, to drop what a watch reconnect missed being deleted."""
    kube: Kube = memo.kube
    store = caches(memo)
    store.policies.replace(await kube.list(ATTESTATION_POLICIES))
    last: float | None = memo.get("relisted_at")
    if last is None or time.monotonic() - last >= RELIST_S:
        store.nodes.replace(await kube.list(NODES))
        store.attested.replace(await kube.list(ATTESTED_NODES))
        memo.relisted_at = time.monotonic()


async def resync(memo: kopf.Memo, schedule: loops.Schedule) -> None:
    """Discovery, challenges and verdict expiry for every node, from the caches."""
    kube: Kube = memo.kube
    store = caches(memo)
    await refresh(memo)

    async def discover_one(node: Obj) -> None:
        attested, patched = await discover(node, kube, store.attested.get(name_of(node)))
        store.attested.put(attested)
        store.nodes.put(patched)

    def name_of(obj: Obj) -> str:
        return str(obj["metadata"]["name"])

    tee_nodes = [n for n in store.nodes if lifecycle.tee_of(n["metadata"].get("labels") or {})]
    await loops.each(tee_nodes, discover_one, schedule, name_of)
    await loops.each(
        [name_of(a) for a in store.attested], lambda n: reconcile(n, memo), schedule, str
    )
