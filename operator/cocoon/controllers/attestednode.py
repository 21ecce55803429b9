"""kopf handlers and the evidence route for node attestation.

Discovery, challenges, expiry and node effects are decided by `cocoon.attestation.lifecycle`;
evidence is judged by `cocoon.attestation.appraisal`. This module reads, calls them and applies.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import kopf
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from cocoon.api.attestationpolicy import AttestationPolicySpec
from cocoon.api.attestednode import AttestedNodeSpec, AttestedNodeStatus
from cocoon.api.common import ConditionStatus, utcnow
from cocoon.attestation import ear, lifecycle, report
from cocoon.attestation.appraisal import appraise_node
from cocoon.attestation.collateral import CollateralCache, CollateralSupplier
from cocoon.attestation.evidence import NodeEvidence
from cocoon.attestation.policy import PolicyError, measurement_condition
from cocoon.attestation.verdict import Failure, Rejected
from cocoon.attestation.verdict import Verdict as AppraisalVerdict
from cocoon.controllers import httpapi, loops, nodes
from cocoon.controllers import status as status_writer
from cocoon.controllers.appraiser import Appraiser, Busy
from cocoon.controllers.policies import PolicyCache, load_policy
from cocoon.kube import ATTESTATION_POLICIES, ATTESTED_NODES, NODES, Kube, NotFound

log = logging.getLogger(__name__)
Obj = dict[str, Any]
Update = tuple[str, ConditionStatus, str, str]


@dataclasses.dataclass
class AttestationState:
    """What the attestation side keeps in the operator's memory: locks and the result key."""

    namespace: str
    agent_username: str
    allow_unbound_tokens: bool
    signing_key: Ed25519PrivateKey
    locks: defaultdict[str, asyncio.Lock] = dataclasses.field(
        default_factory=lambda: defaultdict(asyncio.Lock)
    )
    pccs_url: str | None = None
    kds_url: str | None = None
    collateral: CollateralSupplier = dataclasses.field(
        default_factory=lambda: CollateralSupplier(CollateralCache())
    )
    appraiser: Appraiser = dataclasses.field(default_factory=Appraiser)
    policies: PolicyCache = dataclasses.field(default_factory=PolicyCache)
    # on the leader: the nodes whose objects changed, worked on by `nodes.follow`'s workers
    changes: loops.Dirty | None = None

    @classmethod
    def from_env(cls) -> AttestationState:
        from cocoon import keys

        namespace = os.environ.get("COCOON_NAMESPACE", "cocoon-system")
        key_file = os.environ.get("COCOON_SIGNING_KEY_FILE")
        cache_dir = os.environ.get("COCOON_COLLATERAL_CACHE_DIR")
        return cls(
            namespace=namespace,
            agent_username=os.environ.get(
                "COCOON_AGENT_USERNAME", f"system:serviceaccount:{namespace}:cocoon-agent"
            ),
            allow_unbound_tokens=os.environ.get("COCOON_ALLOW_UNBOUND_AGENT_TOKENS") == "true",
            signing_key=keys.load_or_create(Path(key_file)) if key_file else keys.generate(),
            pccs_url=os.environ.get("COCOON_PCCS_URL") or None,
            kds_url=os.environ.get("COCOON_KDS_URL") or None,
            collateral=CollateralSupplier(CollateralCache(Path(cache_dir) if cache_dir else None)),
            appraiser=Appraiser.from_env(),
        )


# -- policy --------------------------------------------------------------------------------


async def refresh_collateral(memo: kopf.Memo, schedule: loops.Schedule) -> None:
    """The collateral pass: renew cached TDX collateral before its nextUpdate, so attestation
    finds a fresh copy instead of waiting on the PCCS (or failing when it is down)."""
    async with asyncio.timeout(schedule.timeout_s):
        renewed = await memo.attestation.collateral.refresh_due(int(time.time()))
    if renewed:
        log.info("renewed TDX collateral for %s", ", ".join(renewed))


# -- the evidence route ----------------------------------------------------------------------


def setup_routes(app: web.Application, memo: kopf.Memo) -> None:
    async def handler(request: web.Request) -> web.Response:
        return await submit_evidence(request, memo)

    async def keys_handler(_: web.Request) -> web.Response:
        from cocoon import keys

        return web.json_response(ear.jwks(keys.public_bytes(memo.attestation.signing_key)))

    app.router.add_post("/attestation/v1/nodes/{node}/evidence", handler)
    app.router.add_get("/attestation/v1/keys", keys_handler)


async def _refuse_caller(
    request: web.Request, kube: Kube, state: AttestationState, node_name: str
) -> web.Response | None:
    """Only the agent on `node_name`, with an operator-audience token bound to its pod."""
    try:
        caller = await httpapi.review_token(kube, request, audiences=[httpapi.AUDIENCE])
    except httpapi.Unauthorized as exc:
        return httpapi.error(401, "Unauthorized", str(exc))
    if caller.username != state.agent_username:
        return httpapi.error(
            403,
            "NotAnAgent",
            f"{caller.username} may not submit evidence; only the node agent's "
            f"ServiceAccount ({state.agent_username}) may.",
        )
    if caller.node_name != node_name and not (
        caller.node_name is None and state.allow_unbound_tokens
    ):
        return httpapi.error(
            403,
            "WrongNode",
            f"this token is bound to a pod on {caller.node_name or 'no node'}; "
            f"evidence for {node_name} must come from the agent on {node_name}.",
        )
    return None


async def submit_evidence(request: web.Request, memo: kopf.Memo) -> web.Response:
    kube: Kube = memo.kube
    state: AttestationState = memo.attestation
    node_name = request.match_info["node"]
    refused = await _refuse_caller(request, kube, state, node_name)
    if refused is not None:
        return refused
    try:
        payload = await request.json()
        nonce = bytes.fromhex(str(payload["nonce"]))
        public_key = bytes.fromhex(str(payload["publicKey"]))
        evidence = NodeEvidence.from_dict(payload["evidence"])
    except Rejected as exc:
        return httpapi.error(400, exc.failure.reason, exc.failure.message)
    except (ValueError, KeyError, TypeError) as exc:
        return httpapi.error(
            400,
            "MalformedSubmission",
            f"expected JSON {{nonce, publicKey, evidence}} in hex/base64: {exc!r}",
        )
    store = nodes.caches(memo)
    async with state.locks[node_name]:
        # the replica's view first; the live object only when the view lacks it or its
        # challenge does not match (a challenge issued a moment ago, not yet seen here)
        body = store.attested.get(node_name)
        now = utcnow()
        if body is None or _challenge_refusal(body, nonce, now) is not None:
            body = await kube.get_or_none(ATTESTED_NODES, node_name)
            if body is None:
                return httpapi.error(
                    404, "UnknownNode", f"no AttestedNode {node_name}: is it a TEE node?"
                )
            store.attested.put(body)
        refusal = _challenge_refusal(body, nonce, now)
        if refusal is not None:
            return httpapi.error(409, refusal.reason, refusal.message)
        spec = AttestedNodeSpec.model_validate(body["spec"])
        challenge = AttestedNodeStatus.model_validate(body.get("status") or {}).challenge
        assert challenge is not None  # nonce_refusal refuses when there is none
        try:
            policy, policy_name = await state.policies.get(kube, spec.policy_name, state.namespace)
        except (NotFound, ValidationError, PolicyError) as exc:
            return httpapi.error(
                503,
                "PolicyUnavailable",
                f"AttestationPolicy {spec.policy_name} cannot be used: {exc}",
            )
        sources = policy.tdx.collateral
        sources = dataclasses.replace(
            sources,
            pccs_url=sources.pccs_url or state.pccs_url,
            kds_url=sources.kds_url or state.kds_url,
        )
        evidence = await state.collateral.supply(evidence, sources, int(time.time()))
        fetched = await state.collateral.crls(evidence, sources, int(time.time()))
        policy = dataclasses.replace(policy, crls=(*policy.crls, *fetched))
        try:
            verdict = await state.appraiser.run(
                appraise_node,
                evidence,
                policy,
                now=int(time.time()),
                nonce=nonce,
                public_key=public_key,
                nonce_issued_at=int(challenge.issued_at.timestamp()),
            )
        except Busy as exc:
            return httpapi.error(503, "AppraisalBusy", str(exc))
        refusal = lifecycle.node_refusal(spec.tee, spec.expected_gpus, evidence)
        if refusal is not None:
            verdict = dataclasses.replace(verdict, node_failures=(*verdict.node_failures, refusal))
        binding = Binding(node_name, nonce, public_key, policy_name)
        fields, updates = verdict_status(verdict, binding, state.signing_key)
        written = await _store_verdict(kube, body, nonce, fields, updates)
        if isinstance(written, web.Response):
            return written
        store.attested.put(written)
        node = store.nodes.get(node_name) or await kube.get_or_none(NODES, node_name)
        if node is not None:
            store.nodes.put(await nodes.apply_effects_or_defer(kube, node, written))
    log.info(
        "appraised evidence of node %s: %s",
        node_name,
        "verified" if verdict.verified else verdict.reason,
    )
    return web.json_response(
        {"verified": verdict.verified, "reason": verdict.reason, "message": verdict.message}
    )


def _challenge_refusal(body: Obj, nonce: bytes, now: datetime) -> Failure | None:
    status = AttestedNodeStatus.model_validate(body.get("status") or {})
    return lifecycle.nonce_refusal(status.challenge, nonce, now)


async def _store_verdict(
    kube: Kube, body: Obj, nonce: bytes, fields: Obj, updates: list[Update]
) -> Obj | web.Response:
    """Write the verdict only if the challenge it answers is still the node's: the write carries
    the read resourceVersion; on a conflict the live object is read, and the verdict is written
    to it only if it still holds this challenge (a view a moment stale), else refused."""
    for attempt in range(2):
        try:
            return await status_writer.write(
                kube, ATTESTED_NODES, body, fields, updates, precondition=True
            )
        except ApiException as exc:
            if exc.status != 409:
                raise
        live = None if attempt else await kube.get_or_none(ATTESTED_NODES, body["metadata"]["name"])
        if live is None or _challenge_refusal(live, nonce, utcnow()) is not None:
            break
        body = live
    return httpapi.error(
        409,
        "ChallengeChanged",
        "the node's challenge changed while this evidence was appraised; "
        "answer the challenge now in the AttestedNode status.",
    )


@dataclasses.dataclass(frozen=True)
class Binding:
    """What the verdict was issued for: the node, its challenge, the key it bound, the policy."""

    node: str
    nonce: bytes
    public_key: bytes
    policy: str


def verdict_status(
    verdict: AppraisalVerdict, binding: Binding, signing_key: Ed25519PrivateKey
) -> tuple[Obj, list[Update]]:
    """The status fields and Ready condition for a fresh verdict; the challenge is consumed."""
    devices = report.device_results(verdict)
    appraised = report.timestamp(verdict.issued_at)
    fields: Obj = {
        "verdict": report.api_verdict(verdict).value,
        "challenge": None,
        "devices": [d.to_api() for d in devices],
        "tcbStatus": devices[0].tcb_status if devices else "",
        "policy": binding.policy,
        "appraisedAt": appraised.isoformat(),
    }
    if verdict.verified:
        token = ear.sign(
            ear.claims(
                verdict,
                node=binding.node,
                nonce=binding.nonce,
                workload_key=binding.public_key,
                policy=binding.policy,
            ),
            signing_key,
        )
        fields |= {
            "measurementsDigest": report.measurements_digest(verdict),
            "workloadPublicKey": binding.public_key.hex(),
            "verifiedAt": appraised.isoformat(),
            "expiresAt": report.timestamp(verdict.expires_at).isoformat(),
            "attestationToken": token,
        }
        gpus = sum(1 for d in devices if d.kind == "nvgpu")
        return fields, [
            (
                "Ready",
                ConditionStatus.TRUE,
                "Verified",
                f"CPU and {gpus} GPU(s) verified against {binding.policy}; valid until "
                f"{fields['expiresAt']}.",
            )
        ]
    fields |= {"workloadPublicKey": "", "attestationToken": "", "expiresAt": None}
    return fields, [
        (
            "Ready",
            ConditionStatus.FALSE,
            verdict.reason or "Rejected",
            f"{verdict.message[:900]}. The node stays tainted; fix the cause and the "
            "agent's next answer is appraised again.",
        )
    ]


# -- policies ------------------------------------------------------------------------------


async def check_policy(body: Obj, memo: kopf.Memo) -> None:
    """An admin sees on the policy itself whether it can be used."""
    kube: Kube = memo.kube
    name = body["metadata"]["name"]
    try:
        await load_policy(kube, name, memo.attestation.namespace)
        update: Update = ("Ready", ConditionStatus.TRUE, "Valid", "The policy can be applied.")
    except (ValidationError, PolicyError) as exc:
        update = ("Ready", ConditionStatus.FALSE, "Invalid", f"{exc}"[:1000])
    updates = [update]
    with contextlib.suppress(ValidationError):
        updates.append(
            measurement_condition(AttestationPolicySpec.model_validate(body.get("spec") or {}))
        )
    await status_writer.write(kube, ATTESTATION_POLICIES, body, {}, updates)


def register() -> None:
    """A policy's change is checked and acted on at once. Nodes and AttestedNodes are not
    kopf's: the replica's views watch them and `nodes.follow` works on the ones that changed."""

    @kopf.on.event("cocoon.dev", "v1alpha1", "attestationpolicies")
    async def policy_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
        store = nodes.caches(memo)
        if type == "DELETED":
            return
        await check_policy(dict(body), memo)
        changes: loops.Dirty | None = memo.attestation.changes
        for item in store.attested:
            if item["spec"].get("policyName", "default") == body.metadata.name:
                if changes is not None:  # the fleet's nodes, by the pass's workers
                    changes.add(item["metadata"]["name"])
                else:
                    await nodes.reconcile(item["metadata"]["name"], memo)
