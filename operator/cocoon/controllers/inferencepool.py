"""kopf handlers for InferencePool: read, call placement's pure functions, apply, write status."""

from __future__ import annotations

import logging
from typing import Any

import kopf
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from cocoon.api.common import ConditionStatus
from cocoon.api.inferencepool import InferencePoolSpec
from cocoon.controllers import status as status_writer
from cocoon.kube import (
    CONFIGMAPS,
    DEPLOYMENTS,
    INFERENCE_POOLS,
    NODES,
    PODS,
    SERVICES,
    Forbidden,
    Kube,
    api_message,
)
from cocoon.placement import render
from cocoon.placement import status as decide
from cocoon.placement.labels import ATTESTED_LABEL, POOL_LABEL, TEE_LABEL

logger = logging.getLogger(__name__)


def _pool_ref(body: kopf.Body) -> render.PoolRef:
    return render.PoolRef(
        name=body.metadata.name,
        namespace=body.metadata.namespace or "",
        uid=body.metadata.uid or "",
    )


async def reconcile(body: kopf.Body, memo: kopf.Memo) -> None:
    kube: Kube = memo.kube
    settings: render.Settings = memo.settings
    try:
        spec = InferencePoolSpec.model_validate(dict(body.spec))
    except ValidationError as exc:
        await status_writer.write(
            kube,
            INFERENCE_POOLS,
            body,
            {},
            [
                (
                    "Ready",
                    ConditionStatus.FALSE,
                    "InvalidSpec",
                    f"The spec is invalid, nothing was changed: {_first_error(exc)}. Fix the spec.",
                )
            ],
        )
        raise kopf.PermanentError(str(exc)) from exc
    pool = _pool_ref(body)
    keys: list[str] = []
    repo = spec.model.repository.config_map
    if repo is not None:
        cm = await kube.get_or_none(CONFIGMAPS, repo.name, pool.namespace)
        if cm is None:
            await status_writer.write(
                kube,
                INFERENCE_POOLS,
                body,
                {},
                [
                    (
                        "Ready",
                        ConditionStatus.FALSE,
                        "ModelRepositoryMissing",
                        f"ConfigMap {pool.namespace}/{repo.name} (the model repository) does not "
                        "exist; create it (keys like add__config.pbtxt, add__1__model.py).",
                    )
                ],
            )
            raise kopf.TemporaryError("model repository ConfigMap missing", delay=10)
        keys = sorted({**(cm.get("data") or {}), **(cm.get("binaryData") or {})})
    for kind, child in (
        (DEPLOYMENTS, render.deployment(spec, pool, settings, keys)),
        (SERVICES, render.service(pool)),
    ):
        try:
            await kube.apply(kind, child)
        except (ApiException, Forbidden) as exc:
            await _child_failed(kube, body, child["kind"], api_message(exc))
            raise kopf.TemporaryError(f"{child['kind']} apply failed", delay=30) from exc
    await refresh_status(body, memo, spec)


async def _child_failed(kube: Kube, body: kopf.Body, kind: str, message: str) -> None:
    """A child the API server refused: the pool is not Ready, and its status says why."""
    await status_writer.write(kube, INFERENCE_POOLS, body, {}, [(
        "Ready", ConditionStatus.FALSE, "ChildRejected",
        f"The API server refused the pool's {kind}: {message}. The operator retries every "
        "30 s; fix the cause (quota, admission policy, name).",
    )])


async def refresh_status(
    body: kopf.Body, memo: kopf.Memo, spec: InferencePoolSpec | None = None
) -> None:
    kube: Kube = memo.kube
    settings: render.Settings = memo.settings
    if spec is None:
        try:
            spec = InferencePoolSpec.model_validate(dict(body.spec))
        except ValidationError:
            return  # reconcile reports invalid specs
    pool = _pool_ref(body)
    deployment = await kube.get_or_none(DEPLOYMENTS, pool.name, pool.namespace)
    pods = await kube.list(PODS, pool.namespace, labels=render.selector_string(pool))
    tees = ",".join(sorted(str(t) for t in spec.tee_types))
    eligible = await kube.list(NODES, labels=f"{ATTESTED_LABEL}=true,{TEE_LABEL} in ({tees})")
    dep_status: dict[str, Any] = (deployment or {}).get("status") or {}
    observed = decide.Observed(
        desired=spec.replicas,
        generation=int(body.metadata.get("generation") or 0),
        deployment_exists=deployment is not None,
        deployment_generation=int(
            ((deployment or {}).get("metadata") or {}).get("generation") or 0
        ),
        deployment_observed=int(dep_status.get("observedGeneration") or 0),
        updated=int(dep_status.get("updatedReplicas") or 0),
        pods=[decide.pod_view(p) for p in pods],
        eligible_nodes=len(eligible),
        tee_types=sorted(str(t) for t in spec.tee_types),
        gpus_per_replica=spec.gpus_per_replica,
    )
    view = decide.decide(observed)
    ready = view.ready
    if deployment is not None and await kube.get_or_none(
        SERVICES, pool.name, pool.namespace
    ) is None:
        ready = decide.Verdict(
            ConditionStatus.FALSE, "ServiceMissing",
            f"The pool's Service {pool.namespace}/{pool.name} does not exist, so its URL "
            "reaches nothing; the operator recreates it on its next reconcile.",
        )
    fields = {
        "replicas": view.replicas,
        "readyReplicas": view.ready_replicas,
        "selector": render.selector_string(pool),
        "url": render.url(pool, settings),
        "nodes": view.nodes,
        "modelState": str(view.model_state),
        "price": spec.price.to_api(),
    }
    await status_writer.write(
        kube,
        INFERENCE_POOLS,
        body,
        fields,
        [
            ("Available", view.available.status, view.available.reason, view.available.message),
            ("Ready", ready.status, ready.reason, ready.message),
        ],
    )


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "spec"
    return f"spec.{where}: {err['msg']}"


async def resync(memo: kopf.Memo) -> None:
    """Level-based safety net: reconcile every pool, whatever events were missed."""
    for item in await memo.kube.list(INFERENCE_POOLS):
        body = kopf.Body(item)
        try:
            await reconcile(body, memo)
        except (kopf.PermanentError, kopf.TemporaryError):
            continue  # already reported in the pool's status
        except Exception:
            logger.exception(
                "resync of pool %s/%s failed", body.metadata.namespace, body.metadata.name
            )


def register() -> None:
    """Attach the handlers; called by the operator entry point (kopf discovers nothing by magic)."""

    @kopf.on.resume("cocoon.dev", "v1alpha1", "inferencepools")
    @kopf.on.create("cocoon.dev", "v1alpha1", "inferencepools")
    @kopf.on.update("cocoon.dev", "v1alpha1", "inferencepools", field="spec")
    async def pool_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        await reconcile(body, memo)

    @kopf.on.event("", "v1", "pods", labels={POOL_LABEL: kopf.PRESENT})
    async def pool_pod_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        pool = await memo.kube.get_or_none(
            INFERENCE_POOLS, body.metadata.labels[POOL_LABEL], body.metadata.namespace
        )
        if pool is not None:
            await refresh_status(kopf.Body(pool), memo)
