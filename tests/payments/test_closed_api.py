"""The operator's payment routes as an attacker meets them (the real app: api_guard, views,
handlers): credit only for a signed request of the pool's own meter, no Kubernetes call for
anything unauthenticated, bodies bounded before parsing, floods answered 429."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import kopf
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cocoon import keys, signed_request
from cocoon.controllers import api_guard, credit_auth, httpapi, usage_api
from cocoon.controllers.views import Views
from cocoon.kube import INFERENCE_POOLS, PAYMENT_CHANNELS
from cocoon.meter import usage_report
from cocoon.meter.operator_link import OperatorCreditSource
from cocoon.ton.units import TON

from .conftest import NS, POOL, PRICE, channel_body, credit_headers, journal_of, meter_record
from .fakekube import FakeKube, views_of

Client = TestClient[web.Request, web.Application]
METER, OTHER_METER, STRANGER = keys.generate(), keys.generate(), keys.generate()
CREDENTIAL = "ab" * 32
SECRET_CREDENTIAL = "cd" * 32
UNLIMITED = api_guard.Limits(per_source_rate=1e6, per_source_burst=1e6)


def _open_channel(name: str, pool: str, credential: str, namespace: str = NS) -> dict[str, Any]:
    body = channel_body(name, {
        "poolName": pool, "payer": {"keySecretRef": {"name": "payer"}},
        "deposit": str(2 * TON), "creditWindow": str(TON),
    })
    body["metadata"]["namespace"] = namespace
    body["status"] = {"state": "Open", "deposited": str(2 * TON), "credentialSha256": credential,
                      "maxPrice": PRICE}
    return body


def cluster() -> FakeKube:
    """Pool `pool` with METER and channel `ch`; pool `other` with OTHER_METER and its own
    channel, whose credential hash is what an enumerating attacker is after."""
    kube = FakeKube()
    for name, key in ((POOL, METER), ("other", OTHER_METER)):
        kube.put(INFERENCE_POOLS, {"metadata": {"name": name, "namespace": NS}, "spec": {},
                                   "status": {"meters": [meter_record(key, pod=f"{name}-0")]}})
    kube.put(PAYMENT_CHANNELS, _open_channel("ch", POOL, CREDENTIAL))
    kube.put(PAYMENT_CHANNELS, _open_channel("secret", "other", SECRET_CREDENTIAL))
    return kube


async def _client(
    kube: FakeKube, view: Views, limits: api_guard.Limits,
    gate: credit_auth.SignedRequests | None = None,
) -> Client:
    memo = kopf.Memo()
    memo.kube, memo.views = kube, view
    app = httpapi.make_app(
        [lambda a: usage_api.setup_routes(a, memo, lambda ns, n: None, gate)], limits
    )
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture
async def api() -> AsyncIterator[tuple[Client, FakeKube]]:
    kube = cluster()
    client = await _client(kube, views_of(kube), UNLIMITED)
    try:
        yield client, kube
    finally:
        await client.close()


def credit_path(pool: str = POOL) -> str:
    return f"/usage/v1/credit/{NS}/{pool}"


def forged_header(public_of: Ed25519PrivateKey, signer: Ed25519PrivateKey) -> str:
    """A header naming `public_of`'s (published) key, signed by someone else."""
    theirs = signed_request.sign(signer, "GET", credit_path())
    fields = dict(part.split("=", 1) for part in theirs.split(", "))
    fields["key"] = keys.public_bytes(public_of).hex()
    return ", ".join(f"{k}={v}" for k, v in fields.items())


async def test_credit_needs_the_meters_signature_not_its_public_key(api: Any) -> None:
    client, kube = api
    published = keys.public_bytes(METER).hex()
    attempts = [
        await client.get(credit_path(), params={"meter": published}),  # the old way: key only
        await client.get(credit_path(), headers={
            signed_request.HEADER: forged_header(METER, STRANGER)}),
        await client.get(credit_path(), headers=credit_headers(STRANGER)),  # unregistered key
        await client.get(credit_path(), headers=credit_headers(OTHER_METER)),  # another pool's
    ]
    assert [r.status for r in attempts] == [401, 403, 403, 403]
    for response in attempts:
        text = await response.text()
        assert CREDENTIAL not in text and SECRET_CREDENTIAL not in text
        assert f"{NS}/ch" not in text and f"{NS}/secret" not in text
        assert json.loads(text)["error"]["message"]
    assert kube.api_calls == []  # refused from memory, before any Kubernetes call

    good = await client.get(credit_path(), headers=credit_headers(METER))
    assert good.status == 200
    assert (await good.json())["channels"] == [
        {"channel": f"{NS}/ch", "credentialSha256": CREDENTIAL, "creditLimitNanoton": str(TON)}
    ]
    other = await client.get(
        credit_path("other"), headers=credit_headers(OTHER_METER, pool="other")
    )
    assert [c["channel"] for c in (await other.json())["channels"]] == [f"{NS}/secret"]


async def test_a_signature_is_for_one_path_one_time_and_thirty_seconds(api: Any) -> None:
    client, kube = api
    header = credit_headers(METER)
    assert (await client.get(credit_path(), headers=header)).status == 200
    replayed = await client.get(credit_path(), headers=header)
    assert replayed.status == 403
    assert "already used" in (await replayed.json())["error"]["message"]
    # METER signed for its own pool; the same header on another pool's path does not verify
    elsewhere = await client.get(credit_path("other"), headers=credit_headers(METER))
    assert elsewhere.status == 403
    stale = signed_request.sign(METER, "GET", credit_path(), now=time.time() - 31)
    old = await client.get(credit_path(), headers={signed_request.HEADER: stale})
    assert old.status == 403
    assert "30 s" in (await old.json())["error"]["message"]
    assert kube.api_calls == []  # accepted or refused, a credit poll reads only the view


def _report(signer: Ed25519PrivateKey, claimed: Ed25519PrivateKey, **fields: Any) -> Any:
    report = usage_report.UsageReport(
        meter_public_key=keys.public_bytes(claimed).hex(), journal_id=journal_of(claimed),
        pool=f"{NS}/{POOL}", channel=f"{NS}/ch",
        units=usage_report.UsageUnits(requests=1, input_tokens=0, output_tokens=1),
        cost_nanoton=str(10 * TON), journal_sequence=1, issued_at=datetime.now(UTC),
    ).model_copy(update=fields)
    envelope = usage_report.sign(report, claimed).to_api()
    if signer is not claimed:  # a signature by one key on a report naming another
        theirs = report.model_copy(update={"meter_public_key": keys.public_bytes(signer).hex()})
        envelope["signature"] = usage_report.sign(theirs, signer).signature
    return envelope


async def test_fifty_junk_posts_of_each_kind_cost_the_api_server_nothing(api: Any) -> None:
    client, kube = api
    versions = {key: obj["metadata"]["resourceVersion"] for key, obj in kube.objects.items()}
    promise = f"/payments/v1/channels/{NS}/ch/promises"
    junk: list[tuple[str, str, Any, dict[str, str]]] = [
        ("POST", usage_api.REPORTS_PATH, b"{not json", {}),
        ("POST", usage_api.REPORTS_PATH, _report(STRANGER, METER), {}),  # badly signed
        ("POST", usage_api.REPORTS_PATH, _report(STRANGER, STRANGER), {}),  # unregistered
        ("POST", usage_api.REPORTS_PATH, _report(OTHER_METER, OTHER_METER), {}),  # wrong pool
        ("GET", credit_path(), None, {signed_request.HEADER: forged_header(METER, STRANGER)}),
        ("POST", promise, {"cumulative": "1", "signature": "00" * 64}, {}),
        ("POST", f"/payments/v1/channels/{NS}/nope/promises",
         {"cumulative": "1", "signature": "00" * 64}, {}),
    ]
    for method, path, body, headers in junk:
        for _ in range(50):
            data = body if isinstance(body, bytes) else None
            payload = None if isinstance(body, bytes) else body
            response = await client.request(method, path, data=data, json=payload,
                                            headers=headers)
            assert 400 <= response.status < 500 and response.status != 429, (path, body)
            assert (await response.json())["error"]["message"]
    assert kube.api_calls == []
    assert kube.status_writes == 0
    assert versions == {k: o["metadata"]["resourceVersion"] for k, o in kube.objects.items()}


@pytest.mark.parametrize(("path", "limit"), [
    (usage_api.REPORTS_PATH, 64 * 1024),
    (f"/payments/v1/channels/{NS}/ch/promises", 4 * 1024),
    (credit_path(), 4 * 1024),
])
async def test_an_oversized_body_is_refused_before_it_is_read(
    api: Any, path: str, limit: int
) -> None:
    client, kube = api
    malformed = usage_api.REJECTED.labels(reason="malformed")._value.get()
    method = "GET" if "credit" in path else "POST"
    body = b"{" * (limit + 1)  # would be a 400 if it were parsed
    declared = await client.request(method, path, data=body, headers=credit_headers(METER))
    assert declared.status == 413
    error = (await declared.json())["error"]
    assert error["reason"] == "RequestTooLarge" and str(limit) in error["message"]

    async def trickle() -> AsyncIterator[bytes]:  # chunked: no Content-Length to refuse on
        for _ in range(limit // 1024 + 1):
            yield b"{" * 1024

    if method == "POST":  # a GET's body is never read, so only its declared length matters
        chunked = await client.post(path, data=trickle())
        assert chunked.status == 413
        assert (await chunked.json())["error"]["reason"] == "RequestTooLarge"
    assert usage_api.REJECTED.labels(reason="malformed")._value.get() == malformed
    assert kube.api_calls == []


async def test_a_flood_from_one_address_is_answered_429_and_costs_nothing() -> None:
    kube = cluster()
    client = await _client(kube, views_of(kube), api_guard.Limits(0.001, 5))
    refused = api_guard.REFUSALS.labels(reason="rate_limited")._value.get()
    try:
        statuses = [
            (await client.post(usage_api.REPORTS_PATH, data=b"x")).status for _ in range(8)
        ]
        assert statuses == [400] * 5 + [429] * 3
        flooded = await client.get("/metrics")
        assert flooded.status == 429 and int(flooded.headers["Retry-After"]) >= 1
        assert "Retry-After" in (await flooded.json())["error"]["message"]
    finally:
        await client.close()
    assert api_guard.REFUSALS.labels(reason="rate_limited")._value.get() == refused + 4
    assert kube.api_calls == []


async def test_one_meter_key_polling_too_fast_is_answered_429() -> None:
    kube = cluster()
    gate = credit_auth.SignedRequests(per_key=api_guard.TokenBuckets(0.001, 3))
    client = await _client(kube, views_of(kube), UNLIMITED, gate)
    try:
        statuses = [(await client.get(credit_path(), headers=credit_headers(METER))).status
                    for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        other = await client.get(
            credit_path("other"), headers=credit_headers(OTHER_METER, pool="other")
        )
        assert other.status == 200  # one key's bucket, not the source's
    finally:
        await client.close()


async def test_a_replica_whose_view_is_not_loaded_says_503_and_calls_nothing() -> None:
    kube = cluster()
    view = Views()  # no list has arrived yet
    client = await _client(kube, view, UNLIMITED)
    try:
        assert (await client.get("/readyz")).status == 503
        response = await client.post(usage_api.REPORTS_PATH, json=_report(METER, METER))
        assert response.status == 503 and response.headers["Retry-After"]
        assert (await client.get(credit_path(), headers=credit_headers(METER))).status == 503
        for obj in kube.objects.values():
            (view.pools if "spec" in obj and "poolName" not in obj["spec"] else view.channels
             ).feed(obj)
        view.pools.synced.set()
        view.channels.synced.set()
        assert (await client.get("/readyz")).status == 200
    finally:
        await client.close()
    assert kube.api_calls == []


async def test_the_meters_credit_source_signs_its_polls(api: Any) -> None:
    client, _ = api
    url = str(client.make_url("/"))
    async with aiohttp.ClientSession() as session:
        source = OperatorCreditSource(url, f"{NS}/{POOL}", METER)
        assert await source.refresh(session)
        assert await source.refresh(session)  # a fresh nonce every poll
        credit = source.lookup(CREDENTIAL)
        assert credit is not None and credit.channel == f"{NS}/ch"
        assert source.lookup(SECRET_CREDENTIAL) is None
        assert not await OperatorCreditSource(url, f"{NS}/{POOL}", STRANGER).refresh(session)
