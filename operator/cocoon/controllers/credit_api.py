"""The meter's credit document: `GET /usage/v1/credit/{namespace}/{pool}` (the format of
`cocoon.meter.credits`), for a request signed by a live registered meter of that pool
(`credit_auth`). Made from the replica's PaymentChannel view, so the poll every meter makes
every few seconds costs the API server nothing; the channels are a watch event old at most.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web

from cocoon.api.paymentchannel import ChannelState, PaymentChannelSpec, PaymentChannelStatus
from cocoon.controllers import credit_auth, views
from cocoon.kube import Kube, Obj
from cocoon.meter.pricing import Price
from cocoon.ton import accounting, price_bounds


def max_price(body: Obj) -> Price | None:
    """The channel's maximum price in force: spec.maxPrice, else the pool price pinned in
    status when the channel was prepared (None before that: nothing is served yet)."""
    pinned = (body.get("spec") or {}).get("maxPrice") or (body.get("status") or {}).get("maxPrice")
    return Price.model_validate(pinned) if pinned else None


def credit_document(
    channels: Iterable[Obj], namespace: str, pool: str, meter: str, live: set[str], *, price: Price
) -> Obj:
    """Every Open channel of the pool (among `channels`, the replica's view: a poll every few
    seconds from every meter costs no API call) with its credential hash and this meter's limit.

    `meter` and `live` are journal ids: the asking meter's and those of the pool's live
    registered meters, which all share the channel's remaining credit, whether they have
    reported yet or not (so one snapshot's limits never add up past owed + remaining). A
    channel whose maxPrice is below the meter's `price` gets no credit and a refusal the meter
    shows its callers."""
    entries = []
    for item in channels:
        meta, spec_data = item.get("metadata") or {}, item.get("spec") or {}
        if (
            meta.get("namespace") != namespace
            or spec_data.get("poolName") != pool
            or meta.get("deletionTimestamp")
        ):
            continue
        spec = PaymentChannelSpec.model_validate(spec_data)
        status = PaymentChannelStatus.model_validate(item.get("status") or {})
        if status.state is not ChannelState.OPEN or not status.credential_sha256:
            continue
        ref = f"{namespace}/{pool}"
        costs = {m.instance: int(m.cost_nanoton) for m in status.meters if m.pool == ref}
        promised = int(status.latest_promise.cumulative) if status.latest_promise else 0
        remaining = accounting.credit_left(
            int(status.deposited), promised, int(spec.credit_window), int(status.owed)
        )
        limit = accounting.meter_limit(costs, live, meter, remaining)
        entry: Obj = {
            "channel": f"{namespace}/{item['metadata']['name']}",
            "credentialSha256": status.credential_sha256,
            "creditLimitNanoton": str(limit),
        }
        ceiling = max_price(item)
        over = price_bounds.above_max(price, ceiling) if ceiling is not None else ["all"]
        if over:
            entry["creditLimitNanoton"] = str(costs.get(meter, 0))
            entry["refusal"] = (
                f"the pool's price exceeds your PaymentChannel's maxPrice ({', '.join(over)}); "
                "nothing was charged. Create a channel whose maxPrice covers the pool's price "
                "(kubectl get cip -o wide shows it) or use another pool."
            )
        entries.append(entry)
    return {"channels": entries}


async def get_credit(
    request: web.Request, _kube: Kube, gate: credit_auth.SignedRequests
) -> web.Response:
    namespace, pool = request.match_info["namespace"], request.match_info["pool"]
    caller = credit_auth.credit_caller(request, gate, f"{namespace}/{pool}")
    if isinstance(caller, web.Response):
        return caller
    meter, records = caller
    live = {r.journal_id for r in records}
    channels = views.of(request).channels.store
    document = credit_document(channels, namespace, pool, meter.journal_id, live, price=meter.price)
    return web.json_response(document)
