"""The payments part of the operator's HTTP API: meters report usage and poll credit; callers in
Client signing mode submit their promises.

- `POST /usage/v1/reports`: a `SignedUsageReport` envelope. Accepted only when the signature
  holds and the signing key is a live registered meter of the report's pool (its
  `status.meters`, see meter_api), reporting its own journal; the signature is the meter's
  authentication. Refusals are 4xx JSON errors counted in
  `cocoon_usage_reports_rejected_total{reason}`; only refusals of an authenticated meter are
  also counted in the channel's status.rejectedReports, carried by its next accepted report's
  write (`rejections`): no refusal writes anything of its own.
- `GET /usage/v1/credit/{namespace}/{pool}`: the meter's credit document (the format of
  `cocoon.meter.credits`) for that pool's Open channels, and only for a request signed by a
  live registered meter of that pool (`Cocoon-Signature`, see `cocoon.signed_request` and
  `credit_auth`: the receipt key over method, path, time and a nonce; 30 s window, each nonce
  once), answered from the replica's view (`credit_api`).
- `POST /payments/v1/channels/{namespace}/{name}/promises`: `{"cumulative", "signature"}`, a
  promise signed by the channel's payer key (Client signing); the signature authenticates it.

Callers are checked against the replica's in-memory view (`views`: meter records, channels'
payer keys) before any Kubernetes call, so a forged, badly signed, replayed or unregistered
request makes none; api_guard has already bounded each source's rate and each route's body.

Status writes here are read-modify-write with the object's resourceVersion as precondition, so
concurrent reports never lose each other's meters.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import kopf
from aiohttp import web
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest
from pydantic import ValidationError

from cocoon.api.paymentchannel import (
    MeterUsage,
    PaymentChannelSpec,
    PaymentChannelStatus,
    SigningMode,
)
from cocoon.controllers import credit_api, credit_auth, httpapi, meter_api, views
from cocoon.controllers.credit_api import max_price
from cocoon.controllers.rejections import PendingRejections, Where
from cocoon.kube import PAYMENT_CHANNELS, Kube, Obj
from cocoon.meter import usage_report
from cocoon.meter.pricing import Price
from cocoon.ton import accounting, price_bounds, promises
from cocoon.ton.accounting import RejectReason, ReportRejected
from cocoon.ton.settlement import PromiseError, check_promise
from cocoon.ton.tvm import Address

log = logging.getLogger(__name__)

REPORTS_PATH = "/usage/v1/reports"
CREDIT_PATH = "/usage/v1/credit/{namespace}/{pool}"
PROMISES_PATH = "/payments/v1/channels/{namespace}/{name}/promises"
WRITE_ATTEMPTS = 8

REJECTED = Counter(
    "cocoon_usage_reports_rejected_total",
    "Usage reports the operator refused, by reason.",
    ["reason"],
)
ACCEPTED = Counter("cocoon_usage_reports_accepted_total", "Usage reports the operator accepted.")
OnChange = Callable[[str, str], None]


def _now() -> datetime:
    return datetime.now(UTC)


async def update_status(
    kube: Kube, namespace: str, name: str, change: Callable[[Obj], Obj | None]
) -> Obj | None:
    """Apply `change(status) -> fields to merge` under the resourceVersion precondition."""
    for _ in range(WRITE_ATTEMPTS):
        body = await kube.get(PAYMENT_CHANNELS, name, namespace)
        fields = change(body.get("status") or {})
        if fields is None:
            return body
        patch = {
            "metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
            "status": fields,
        }
        try:
            return await kube.patch(PAYMENT_CHANNELS, name, patch, namespace, subresource="status")
        except ApiException as exc:
            if exc.status != 409:
                raise
    raise web.HTTPServiceUnavailable(reason="status kept changing; retry")


def _split(ref: str) -> tuple[str, str] | None:
    namespace, _, name = ref.partition("/")
    return (namespace, name) if namespace and name and "/" not in name else None


def _count_rejection(pending: PendingRejections, where: Where, reason: RejectReason) -> None:
    """An authenticated meter's refused report: counted now, in status with the next write."""
    REJECTED.labels(reason=reason.value).inc()
    pending.add(where)


def _reject(reason: RejectReason, status: int, message: str) -> web.Response:
    return httpapi.error(status, "".join(w.capitalize() for w in reason.value.split("_")), message)


async def submit_report(
    request: web.Request, kube: Kube, on_change: OnChange, pending: PendingRejections
) -> web.Response:
    try:
        envelope = usage_report.SignedUsageReport.model_validate(await request.json())
    except (ValueError, ValidationError) as exc:
        REJECTED.labels(reason=RejectReason.MALFORMED.value).inc()
        return _reject(
            RejectReason.MALFORMED,
            400,
            f"expected a SignedUsageReport {{report, signature}}: {exc}",
        )
    report = envelope.report
    try:
        usage_report.verify(envelope)
    except usage_report.UsageReportError as exc:
        REJECTED.labels(reason=RejectReason.BAD_SIGNATURE.value).inc()
        return _reject(RejectReason.BAD_SIGNATURE, 403, f"{exc}; sign with the meter's key.")
    record = meter_api.registered(views.of(request), report.pool, report.meter_public_key)
    if record is None or record.journal_id != report.journal_id:
        REJECTED.labels(reason=RejectReason.UNATTESTED.value).inc()
        return _reject(
            RejectReason.UNATTESTED,
            403,
            f"the signing key is not a registered meter of pool {report.pool} reporting its own "
            "journal; only meters whose endpoint evidence the operator verified may report "
            "usage.",
        )
    where = _split(report.channel)
    body = await kube.get_or_none(PAYMENT_CHANNELS, where[1], where[0]) if where else None
    if where is None or body is None:
        REJECTED.labels(reason=RejectReason.UNKNOWN_CHANNEL.value).inc()
        return _reject(
            RejectReason.UNKNOWN_CHANNEL,
            410,
            f"no PaymentChannel {report.channel!r} (deleted, or not namespace/name); stop "
            "reporting it.",
        )
    pool = f"{where[0]}/{body['spec'].get('poolName')}"
    if report.pool != pool:
        _count_rejection(pending, where, RejectReason.WRONG_POOL)
        return _reject(
            RejectReason.WRONG_POOL,
            403,
            f"channel {report.channel} pays for pool {pool}, not {report.pool}.",
        )
    refusal = _price_refusal(report, record.price, body)
    if refusal is not None:
        REJECTED.labels(reason=refusal[0].value).inc()
        log.warning(
            "usage report refused",
            extra={
                "fields": {
                    "reason": refusal[0].value,
                    "channel": report.channel,
                    "meter": report.meter_public_key,
                }
            },
        )
        return _reject(*refusal)
    usage = accounting.MeterUsage(
        report.journal_id, report.pool, report.journal_sequence, int(report.cost_nanoton)
    )
    rejected: list[ReportRejected] = []
    carried = [0]  # waiting refusals the last attempted write carries

    def merge(status: Obj) -> Obj | None:
        current = [_usage(MeterUsage.model_validate(m)) for m in status.get("meters") or []]
        try:
            merged = accounting.merge_report(current, usage)
        except ReportRejected as exc:
            rejected.append(exc)
            return None
        if merged is None:
            return None
        stamp = _now().replace(microsecond=0).isoformat()
        carried[0], carry = pending.carry(where, status)
        return {
            "meters": [
                _api(m, stamp if m == usage else None, status, report.meter_public_key)
                for m in merged
            ],
            "owed": str(accounting.total_owed(merged)),
            **carry,
        }

    updated = await update_status(kube, where[0], where[1], merge)
    if rejected:
        _count_rejection(pending, where, rejected[0].reason)
        return _reject(rejected[0].reason, 409, str(rejected[0]))
    pending.written(where, carried[0])
    ACCEPTED.inc()
    on_change(*where)
    status = (updated or {}).get("status") or {}
    return web.json_response({"accepted": True, "owed": status.get("owed", "0")})


def _price_refusal(
    report: usage_report.UsageReport, price: Price, body: Obj
) -> tuple[RejectReason, int, str] | None:
    """A report is charged at its meter's registered price, within the channel's maxPrice."""
    ceiling = max_price(body)
    if ceiling is None:
        return (
            RejectReason.PRICE_ABOVE_MAX,
            409,
            (f"channel {report.channel} has no maximum price pinned yet; it serves nothing."),
        )
    over = price_bounds.above_max(price, ceiling)
    if over:
        return (
            RejectReason.PRICE_ABOVE_MAX,
            409,
            (
                f"this meter's price exceeds channel {report.channel}'s maxPrice for "
                f"{', '.join(over)}; the channel must not be served by it."
            ),
        )
    wrong = price_bounds.cost_refusal(
        price_bounds.units_of(report.units), int(report.cost_nanoton), price
    )
    if wrong is not None:
        return RejectReason.MISPRICED, 403, f"{wrong}; report what the journal holds."
    return None


def _usage(m: MeterUsage) -> accounting.MeterUsage:
    return accounting.MeterUsage(m.instance, m.pool, m.journal_sequence, int(m.cost_nanoton))


def _api(m: accounting.MeterUsage, stamp: str | None, status: Obj, signer: str) -> Obj:
    previous: Obj = next(
        (
            p
            for p in status.get("meters") or []
            if (p.get("instance"), p.get("pool")) == (m.instance, m.pool)
        ),
        {},
    )
    if stamp is None:  # unchanged: keep when and by whom it was reported
        stamp = previous.get("reportedAt")
        signer = str(previous.get("publicKey", signer))
    entry: Obj = {
        "instance": m.instance,
        "publicKey": signer,
        "pool": m.pool,
        "journalSequence": m.journal_sequence,
        "costNanoton": str(m.cost),
    }
    if stamp:
        entry["reportedAt"] = stamp
    return entry


async def submit_promise(request: web.Request, kube: Kube, on_change: OnChange) -> web.Response:
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    try:
        payload = await request.json()
        cumulative = int(str(payload["cumulative"]))
        signature = bytes.fromhex(str(payload["signature"]))
    except (ValueError, KeyError, TypeError) as exc:
        return httpapi.error(
            400,
            "MalformedPromise",
            f"expected JSON {{cumulative: nanoton string, signature: hex}}: {exc}",
        )
    body = views.of(request).channel(namespace, name)  # checked in memory before any API call
    if body is None:
        return httpapi.error(404, "UnknownChannel", f"no PaymentChannel {namespace}/{name}.")
    spec = PaymentChannelSpec.model_validate(body["spec"])
    status = PaymentChannelStatus.model_validate(body.get("status") or {})
    if spec.payer.signing is not SigningMode.CLIENT:
        return httpapi.error(
            409, "ManagedSigning", "this channel's promises are signed by the operator (Managed)."
        )
    if status.parameters is None or not status.channel_id:
        return httpapi.error(409, "NotDeployed", "the channel has no id yet; retry shortly.")
    promise = promises.Promise(
        Address(status.address), int(status.channel_id, 16), cumulative, signature
    )
    if not promises.verify(bytes.fromhex(status.parameters.payer_public_key), promise):
        return httpapi.error(
            403,
            "BadSignature",
            "not signed by spec.payer.publicKey for this channel's id and address.",
        )
    problem: list[str] = []

    def accept(current: Obj) -> Obj | None:
        latest = (current.get("latestPromise") or {}).get("cumulative")
        previous = int(latest) if latest else 0
        if cumulative == previous:
            return None
        try:
            check_promise(previous, cumulative, int(current.get("deposited") or 0))
        except PromiseError as exc:
            problem.append(str(exc))
            return None
        return {"latestPromise": {"cumulative": str(cumulative), "signature": signature.hex()}}

    await update_status(kube, namespace, name, accept)
    if problem:
        return httpapi.error(
            409,
            "PromiseRefused",
            f"{problem[0]}; sign a higher cumulative amount within the deposit.",
        )
    on_change(namespace, name)
    return web.json_response({"accepted": True, "promised": str(cumulative)})


async def metrics(_: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def setup_routes(
    app: web.Application,
    memo: kopf.Memo,
    on_change: OnChange,
    gate: credit_auth.SignedRequests | None = None,
) -> None:
    view: views.Views = memo.views
    views.attach(app, view)

    def bind(
        handler: Callable[..., Awaitable[web.Response]], *extra: Any
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def route(request: web.Request) -> web.Response:
            if not view.ready:  # nothing to check callers against yet
                return views.not_ready()
            return await handler(request, memo.kube, *extra)

        return route

    app.router.add_post(REPORTS_PATH, bind(submit_report, on_change, PendingRejections()))
    app.router.add_get(
        CREDIT_PATH, bind(credit_api.get_credit, gate or credit_auth.SignedRequests())
    )
    app.router.add_post(PROMISES_PATH, bind(submit_promise, on_change))
    if not any(getattr(r, "canonical", "") == "/metrics" for r in app.router.resources()):
        app.router.add_get("/metrics", metrics)
