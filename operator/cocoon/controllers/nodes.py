"""Nodes' side of attestation: discovery, the labels and taints a verdict implies, and the
level-based pass that challenges, expires and re-checks every node from the informer caches.

The evidence route (attestednode.py) appraises; this module keeps every node's state moving
without it: new nodes get an AttestedNode, verdicts lapse on time, challenges are issued.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import kopf
from kubernetes_asyncio.client.exceptions import ApiException

from cocoon.api.attestationpolicy import AttestationPolicySpec
from cocoon.api.attestednode import AttestedNodeSpec, AttestedNodeStatus
from cocoon.api.common import utcnow
from cocoon.api.inferencepool import TeeType
from cocoon.attestation import lifecycle, upkeep
from cocoon.controllers import cache, loops, views
from cocoon.controllers import status as status_writer
from cocoon.kube import ATTESTED_NODES, NODES, Kube

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
    (None when it did not change), for the caches. A Node that keeps changing under the taint
    write (kwok or a kubelet initialising it) is tainted on its next change or the next pass."""
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
    if existing is None:
        existing = await create_or_apply(kube, attested_node_manifest(node, spec))
    elif existing.get("spec") != spec.to_api():
        existing = await kube.apply(ATTESTED_NODES, attested_node_manifest(node, spec))
    return existing, await apply_effects_or_defer(kube, node, existing)


async def create_or_apply(kube: Kube, manifest: Obj) -> Obj:
    """A new node's AttestedNode by a plain create, which costs the API server a fraction of a
    server-side apply (no managed-fields merge) at fleet scale; one another replica or an
    earlier pass created meanwhile is applied over."""
    try:
        return await kube.create(ATTESTED_NODES, manifest)
    except ApiException as exc:
        if exc.status != 409:
            raise
    return await kube.apply(ATTESTED_NODES, manifest)


def effects_patch(node: Obj, attested: Obj | None) -> list[Obj]:
    """The JSON patch that brings the Node's labels and taints in line with the verdict (empty
    when they already are).

    The taint list is replaced whole, so the write is guarded by a `test` of the Node's spec as
    read: it fails when another writer (a cordon, another controller's taint) changed the spec
    since, and never clobbers it. It is not guarded by the resourceVersion, which every status
    heartbeat moves: at 10,000 nodes that guard failed almost every first write."""
    meta = node["metadata"]
    if attested is None:
        wanted = lifecycle.released()
    else:
        status = AttestedNodeStatus.model_validate(attested.get("status") or {})
        gpus = sum(1 for d in status.devices if d.kind == "nvgpu" and d.status == "affirming")
        tee = TeeType(attested["spec"]["tee"])
        wanted = lifecycle.effects(status.verdict, tee, gpus)
    existing = meta.get("labels") or {}
    labels = lifecycle.label_patch(existing, wanted.labels)
    spec = node.get("spec") or {}
    taints = lifecycle.merged_taints(spec.get("taints") or [], wanted.taints)
    ops: list[Obj] = []
    if taints is not None:
        ops += [
            {"op": "test", "path": "/spec", "value": spec},
            {"op": "add", "path": "/spec/taints", "value": taints},
        ]
    if labels and not existing:
        set_ = {k: v for k, v in labels.items() if v is not None}
        ops.append({"op": "add", "path": "/metadata/labels", "value": set_})
    elif labels:
        for key, value in labels.items():
            path = "/metadata/labels/" + key.replace("~", "~0").replace("/", "~1")
            # a label to remove that the live Node lacks fails the patch (422), like a test
            change = {"op": "add", "value": value} if value is not None else {"op": "remove"}
            ops.append({**change, "path": path})
    return ops


CHANGED_UNDER_US = frozenset({409, 422})  # a resourceVersion conflict; a failed JSON-patch test


async def apply_effects(kube: Kube, node: Obj, attested: Obj | None) -> Obj | None:
    """Labels and taints that follow from the verdict; written only when they change.

    `node` may be a cached copy: when its spec or labels changed since, the write fails its
    test, and the live Node is then read and decided on once more."""
    for attempt in range(2):
        ops = effects_patch(node, attested)
        if not ops:
            return None
        try:
            return await kube.patch_ops(NODES, node["metadata"]["name"], ops)
        except ApiException as exc:
            if exc.status not in CHANGED_UNDER_US or attempt:
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
        if exc.status not in CHANGED_UNDER_US:
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


def node_changed(before: Obj | None, after: Obj | None) -> bool:
    """Whether a Node event (slimmed copies, before and after) means attestation work: a new
    node, or new labels, taints or GPU capacity. Heartbeats and other status-only writes, and
    the echo of our own label write, change none of them."""
    if after is None:
        return False  # deleted: its AttestedNode goes with it (owner reference)
    if before is None:
        return True
    return _content(before) != _content(after)


def _content(node: Obj) -> tuple[Obj, Any, Any]:
    meta = {k: v for k, v in node["metadata"].items() if k != "resourceVersion"}
    return meta, node.get("spec"), node.get("status")


def attested_changed(before: Obj | None, after: Obj | None) -> bool:
    """Whether an AttestedNode event is news: not a deletion, and a version the store did not
    already hold (the echo of a write whose answer we stored is not)."""
    if after is None:
        return False
    if before is None:
        return True
    version = before["metadata"].get("resourceVersion")
    return version is None or version != after["metadata"].get("resourceVersion")


def policy_spec(memo: kopf.Memo, name: str) -> AttestationPolicySpec | None:
    state: AttestationState = memo.attestation
    return state.policies.spec(name)


async def reconcile(name: str, memo: kopf.Memo) -> None:
    """Lapse, challenge or report, decided on the cached objects; the write carries the cached
    resourceVersion, and only when it conflicts is the live AttestedNode read and decided on
    again. Node effects are written only when they change."""
    state: AttestationState = memo.attestation
    async with state.locks[name]:
        await _upkeep(name, memo)


async def _upkeep(name: str, memo: kopf.Memo) -> None:
    """`reconcile`'s work; the caller holds the node's lock."""
    kube: Kube = memo.kube
    store = caches(memo)
    body, node = store.attested.get(name), store.nodes.get(name)
    if body is None or node is None:
        return
    policy_name = str(body["spec"].get("policyName", "default"))
    for attempt in range(2):
        if attempt:
            live = await kube.get_or_none(ATTESTED_NODES, name)
            if live is None:
                store.attested.remove({"metadata": {"name": name}})
                return
            store.attested.put(live)
            body = live
        status = AttestedNodeStatus.model_validate(body.get("status") or {})
        step = upkeep.plan(status, policy_spec(memo, policy_name), policy_name, utcnow())
        if not step.writes:
            break
        try:
            body = await status_writer.write(
                kube, ATTESTED_NODES, body, step.fields, step.updates, precondition=True
            )
        except ApiException as exc:
            if exc.status != 409:
                raise
            if attempt:
                return  # another replica wrote first (evidence); decided again next time
            continue
        store.attested.put(body)
        break
    store.nodes.put(await apply_effects(kube, node, body))


async def settle(name: str, memo: kopf.Memo) -> None:
    """Everything one changed node needs: its AttestedNode, then its challenge or expiry. Under
    the node's lock, so discovery never writes effects from a copy the evidence route is
    replacing."""
    state: AttestationState = memo.attestation
    store = caches(memo)
    async with state.locks[name]:
        node = store.nodes.get(name)
        if node is None:
            return
        attested, patched = await discover(node, memo.kube, store.attested.get(name))
        store.nodes.put(patched)
        if attested is None:
            store.attested.remove(node)
            return
        store.attested.put(attested)
        await _upkeep(name, memo)


def follow(memo: kopf.Memo, schedule: loops.Schedule) -> list[asyncio.Task[None]]:
    """On the leader: work on each Node or AttestedNode that changed, as the views see it
    (every node once at the start); stops when the returned tasks are cancelled."""
    view: views.Views = memo.views
    changes = loops.Dirty(lambda name: settle(name, memo), schedule)
    memo.attestation.changes = changes

    def on_node(before: Obj | None, after: Obj | None) -> None:
        if after is not None and node_changed(before, after):
            changes.add(after["metadata"]["name"])

    def on_attested(before: Obj | None, after: Obj | None) -> None:
        if after is not None and attested_changed(before, after):
            changes.add(after["metadata"]["name"])

    async def begin() -> None:
        view.nodes.listeners.append(on_node)
        view.attested.listeners.append(on_attested)
        try:
            await view.nodes.synced.wait()
            for node in view.nodes.store:
                changes.add(node["metadata"]["name"])
            await asyncio.Event().wait()  # until cancelled
        finally:
            view.nodes.listeners.remove(on_node)
            view.attested.listeners.remove(on_attested)
            memo.attestation.changes = None

    return [asyncio.create_task(begin(), name="changes-attestation-follow"), *changes.start()]


async def resync(memo: kopf.Memo, schedule: loops.Schedule) -> None:
    """Discovery, challenges and verdict expiry for every node, from the watch-fed views: no
    API call unless something is due."""
    kube: Kube = memo.kube
    state: AttestationState = memo.attestation
    store = caches(memo)

    async def discover_one(name: str) -> None:
        async with state.locks[name]:
            # the copy as it is now, not as the pass began: the evidence route may have
            # labelled it since, and a stale copy would fail its write and cost a re-read
            node = store.nodes.get(name)
            if node is None:
                return
            attested, patched = await discover(node, kube, store.attested.get(name))
            store.attested.put(attested)
            store.nodes.put(patched)

    def name_of(obj: Obj) -> str:
        return str(obj["metadata"]["name"])

    tee_nodes = [
        name_of(n) for n in store.nodes if lifecycle.tee_of(n["metadata"].get("labels") or {})
    ]
    await loops.each(tee_nodes, discover_one, schedule, str)
    await loops.each(
        [name_of(a) for a in store.attested], lambda n: reconcile(n, memo), schedule, str
    )
