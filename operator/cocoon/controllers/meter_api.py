"""The meters' registration routes: how the operator learns which meter keys it may trust.

- `GET /meters/v1/challenge`: a fresh, stateless challenge (any replica can check it).
- `POST /meters/v1/register`: `{"evidence": EndpointEvidence, "journalId": hex}` with the
  meter pod's bound ServiceAccount token (audience `cocoon-operator`). Checked cheapest first,
  so a forged or replayed registration costs no Kubernetes call: body shape, challenge MAC and
  age; then TokenReview (a pod-bound token of a pool pod on the node it claims), the pod, the
  node's verdict and policy, the evidence appraised under that policy; only then the record is
  written into the pool's `status.meters`. Refusals are counted by reason.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import kopf
from aiohttp import web
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cocoon import keys
from cocoon.api.attestednode import AttestedNodeSpec, AttestedNodeStatus, Verdict
from cocoon.api.common import utcnow
from cocoon.api.inferencepool import InferencePoolStatus, MeterRecord
from cocoon.attestation import endpoint
from cocoon.attestation.endpoint import EndpointEvidence
from cocoon.attestation.policy import PolicyError
from cocoon.controllers import httpapi, views
from cocoon.controllers.appraiser import Busy
from cocoon.kube import ATTESTED_NODES, INFERENCE_POOLS, PODS, Kube, NotFound
from cocoon.meter.pricing import Price
from cocoon.placement import meters
from cocoon.placement.labels import POOL_LABEL

log = logging.getLogger(__name__)

CHALLENGE_PATH = "/meters/v1/challenge"
REGISTER_PATH = "/meters/v1/register"
AUDIENCE = httpapi.AUDIENCE
WRITE_ATTEMPTS = 8

REGISTRATIONS = Counter(
    "cocoon_meter_registrations_total",
    "Meter registrations, by result (ok or the refusal's reason).",
    ["result"],
)


class Registration(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")
    evidence: EndpointEvidence
    journal_id: str = Field(alias="journalId", pattern=r"^[0-9a-f]{32}$")


def _refuse(status: int, reason: str, message: str) -> web.Response:
    REGISTRATIONS.labels(result=reason).inc()
    return httpapi.error(status, reason, message)


def setup_routes(app: web.Application, memo: kopf.Memo) -> None:
    async def get_challenge(_: web.Request) -> web.Response:
        nonce = meters.challenge(_key(memo), int(time.time()))
        return web.json_response(
            {"nonce": nonce.hex(), "expiresInSeconds": meters.CHALLENGE_SECONDS}
        )

    async def post_register(request: web.Request) -> web.Response:
        return await register(request, memo)

    views.attach(app, memo.views)
    app.router.add_get(CHALLENGE_PATH, get_challenge)
    app.router.add_post(REGISTER_PATH, post_register)


def _key(memo: kopf.Memo) -> bytes:
    """Every replica shares the signing key (a Secret), so every replica shares this key."""
    return meters.challenge_key(keys.private_bytes(memo.attestation.signing_key))


async def register(request: web.Request, memo: kopf.Memo) -> web.Response:
    kube: Kube = memo.kube
    try:
        registration = Registration.model_validate_json(await request.read())
    except (ValidationError, ValueError) as exc:
        return _refuse(
            400,
            "MalformedRegistration",
            f"expected {{evidence: EndpointEvidence, journalId}}: {exc}"[:600],
        )
    document = registration.evidence
    now = int(time.time())
    refusal = meters.challenge_refusal(_key(memo), bytes.fromhex(document.nonce), now)
    if refusal is not None:
        return _refuse(403, refusal.reason, refusal.message)
    try:
        caller = await httpapi.review_token(kube, request, audiences=[AUDIENCE])
    except httpapi.Unauthorized as exc:
        return _refuse(401, "Unauthorized", str(exc))
    who = meters.pod_identity(caller.user)
    if who is None:
        return _refuse(
            403,
            "NotAPodToken",
            "register with the meter pod's bound ServiceAccount "
            f"token (a projected token with audience {AUDIENCE})",
        )
    pod = await kube.get_or_none(PODS, who.pod, who.namespace)
    refusal = meters.placement_refusal(who, pod, document)
    if refusal is not None:
        return _refuse(403, refusal.reason, refusal.message)
    assert pod is not None
    price = meters.meter_price(pod)
    if price is None:
        return _refuse(
            403,
            "NoMeterPrice",
            f"pod {who.namespace}/{who.pod} has no meter container with price arguments; "
            "only pods the operator rendered serve a pool",
        )
    node = await kube.get_or_none(ATTESTED_NODES, who.node)
    if node is None:
        return _refuse(403, "NodeNotAttested", f"node {who.node} has no AttestedNode")
    status = AttestedNodeStatus.model_validate(node.get("status") or {})
    stamp = utcnow()
    if status.verdict is not Verdict.VERIFIED or (
        status.expires_at is not None and status.expires_at <= stamp
    ):
        return _refuse(403, "NodeNotAttested", f"node {who.node} is not Verified")
    spec = AttestedNodeSpec.model_validate(node["spec"])
    try:
        policy, _ = await memo.attestation.policies.get(
            kube, spec.policy_name, memo.attestation.namespace
        )
    except (NotFound, ValidationError, PolicyError) as exc:
        return _refuse(503, "PolicyUnavailable", f"policy {spec.policy_name}: {exc}")
    try:
        verdict = await memo.attestation.appraiser.run(
            endpoint.appraise,
            document,
            policy,
            now=now,
            nonce=bytes.fromhex(document.nonce),
            tls_spki_sha256=None,
        )
    except Busy as exc:
        return _refuse(503, "AppraisalBusy", str(exc))
    if not verdict.verified:
        return _refuse(403, verdict.reason or "Rejected", verdict.message[:600])
    lifetime = min(
        timedelta(seconds=verdict.expires_at - now),
        (status.expires_at - stamp) if status.expires_at is not None else timedelta.max,
    )
    pool_name = pod["metadata"]["labels"][POOL_LABEL]
    written = await _write_record(
        kube,
        who.namespace,
        pool_name,
        who,
        registration,
        price=price,
        lifetime=lifetime,
        view=views.of(request),
    )
    if written is None:
        return _refuse(404, "UnknownPool", f"InferencePool {who.namespace}/{pool_name} is gone")
    REGISTRATIONS.labels(result="ok").inc()
    log.info(
        "meter registered",
        extra={
            "fields": {
                "pool": f"{who.namespace}/{pool_name}",
                "pod": who.pod,
                "node": who.node,
                "receiptKey": document.receipt_public_key,
            }
        },
    )
    return web.json_response(
        {
            "registered": True,
            "expiresAt": written.expires_at.isoformat(),
            "renewAfterSeconds": max(5, int(lifetime.total_seconds() / 3)),
        }
    )


async def _write_record(
    kube: Kube,
    namespace: str,
    pool: str,
    who: meters.PodIdentity,
    registration: Registration,
    *,
    price: Price,
    lifetime: timedelta,
    view: views.Views,
) -> MeterRecord | None:
    for _ in range(WRITE_ATTEMPTS):
        body = await kube.get_or_none(INFERENCE_POOLS, pool, namespace)
        if body is None:
            return None
        now = utcnow()
        current = InferencePoolStatus.model_validate(body.get("status") or {}).meters
        record = meters.record(
            who,
            registration.evidence,
            registration.journal_id,
            price=price,
            generation=int(body["metadata"].get("generation") or 0),
            now=now,
            lifetime=lifetime,
        )
        patch = {
            "metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
            "status": {"meters": [r.to_api() for r in meters.merged(current, record, now)]},
        }
        try:
            updated = await kube.patch(
                INFERENCE_POOLS, pool, patch, namespace, subresource="status"
            )
        except ApiException as exc:
            if exc.status != 409:
                raise
            continue
        view.pools.feed(updated)  # this replica trusts the key at once, before the watch says so
        return record
    raise web.HTTPServiceUnavailable(reason="pool status kept changing; retry")


def registered(view: views.Views, pool_ref: str, public_key: str) -> MeterRecord | None:
    """The live record of `public_key` among the pool's meters, from memory (no API call)."""
    return meters.find(view.meters(pool_ref), public_key, utcnow())
