"""Reports are charged at the meter's registered price, within the channel's maxPrice.

Attacks on the real usage route (real chain emulator, the channel controller): a zero-unit report
claiming 1000 TON, a cost a nanoton above its units, a meter priced above the channel's maxPrice.
Each is refused with its reason, counted, and writes nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY

from cocoon import keys
from cocoon.kube import INFERENCE_POOLS, PAYMENT_CHANNELS
from cocoon.meter import usage_report
from cocoon.placement import meters
from cocoon.placement.render import meter_container
from cocoon.ton.units import TON

from .conftest import NS, POOL, PRICE, Env, credit_headers, journal_of, meter_record
from .test_channel_lifecycle import condition, signed_report

Client = TestClient[web.Request, web.Application]


def refused(reason: str) -> float:
    return REGISTRY.get_sample_value(
        "cocoon_usage_reports_rejected_total", {"reason": reason}
    ) or 0.0


def priced_report(key: Any, units: usage_report.UsageUnits, cost: int, seq: int) -> dict[str, Any]:
    report = usage_report.UsageReport(
        meter_public_key=keys.public_bytes(key).hex(), journal_id=journal_of(key),
        pool=f"{NS}/{POOL}", channel=f"{NS}/ch", units=units, cost_nanoton=str(cost),
        journal_sequence=seq, issued_at=datetime.now(UTC),
    )
    return usage_report.sign(report, key).to_api()


async def test_the_channel_pins_the_pools_price_as_its_max(env: Env) -> None:
    env.add_channel()
    await env.reconcile()
    assert (await env.status())["maxPrice"]["perOutputToken"] == PRICE["perOutputToken"]
    # the pool's price rises later: the pin stays
    assert condition(await env.status(), "PriceAccepted")["reason"] == "WithinMaxPrice"
    pool = env.kube.objects[(INFERENCE_POOLS.plural, NS, POOL)]
    pool["spec"]["price"] = {"perOutputToken": "9"}
    await env.reconcile()
    status = await env.status()
    assert status["maxPrice"]["perOutputToken"] == PRICE["perOutputToken"]
    priced = condition(status, "PriceAccepted")
    assert (priced["status"], priced["reason"]) == ("False", "PriceAboveMax")
    assert "completion" in priced["message"]


async def test_a_mispriced_report_is_refused_and_writes_nothing(env: Env, api: Client) -> None:
    env.add_channel()
    await env.reconcile()
    writes, before = env.kube.status_writes, refused("mispriced")
    zero = usage_report.UsageUnits(requests=0, input_tokens=0, output_tokens=0)
    for units, cost in ((zero, 1000 * TON), (usage_report.UsageUnits(
            requests=1, input_tokens=0, output_tokens=100), 101)):
        answer = await api.post(
            "/usage/v1/reports", json=priced_report(env.meter_key, units, cost, 1)
        )
        assert answer.status == 403, await answer.text()
        error = (await answer.json())["error"]
        assert error["reason"] == "Mispriced"
        assert "at this meter's price" in error["message"]
    assert refused("mispriced") == before + 2
    assert env.kube.status_writes == writes, "a refused report writes nothing"
    assert (await env.status()).get("owed", "0") == "0"
    # the honest report of the same units is accepted
    ok = await api.post("/usage/v1/reports", json=signed_report(env.meter_key, 100, 1))
    assert ok.status == 200, await ok.text()


async def test_a_meter_priced_above_the_channels_max_is_refused(env: Env, api: Client) -> None:
    env.add_channel()
    await env.reconcile()
    dear = keys.generate()
    pool = env.kube.objects[(INFERENCE_POOLS.plural, NS, POOL)]
    pool["status"]["meters"].append(meter_record(dear, pod="pool-1") | {
        "price": {"perOutputToken": "2"}})
    env.kube.put(INFERENCE_POOLS, pool)  # as a watch event: the API's view follows
    writes, before = env.kube.status_writes, refused("price_above_max")
    answer = await api.post("/usage/v1/reports", json=priced_report(
        dear, usage_report.UsageUnits(requests=1, input_tokens=0, output_tokens=5), 10, 1))
    assert answer.status == 409, await answer.text()
    error = (await answer.json())["error"]
    assert error["reason"] == "PriceAboveMax" and "completion" in error["message"]
    assert refused("price_above_max") == before + 1
    assert env.kube.status_writes == writes

    # its credit document refuses the channel: no credit, and the reason its callers will see
    document = await (await api.get(
        f"/usage/v1/credit/{NS}/{POOL}", headers=credit_headers(dear))).json()
    [entry] = document["channels"]
    assert entry["creditLimitNanoton"] == "0"
    assert "maxPrice" in entry["refusal"]
    # the fairly priced meter keeps its credit
    fair = await (await api.get(
        f"/usage/v1/credit/{NS}/{POOL}", headers=credit_headers(env.meter_key))).json()
    [kept] = fair["channels"]
    assert "refusal" not in kept and int(kept["creditLimitNanoton"]) > 0


async def test_a_channel_without_a_pinned_max_serves_nothing(env: Env, api: Client) -> None:
    env.add_channel()
    await env.reconcile()
    channel = env.kube.objects[(PAYMENT_CHANNELS.plural, NS, "ch")]
    del channel["status"]["maxPrice"]
    env.kube.put(PAYMENT_CHANNELS, channel)
    answer = await api.post("/usage/v1/reports", json=signed_report(env.meter_key, 5, 1))
    assert answer.status == 409
    assert (await answer.json())["error"]["reason"] == "PriceAboveMax"


def test_registration_reads_the_price_from_the_pods_meter_arguments() -> None:
    """The operator learns an instance's price from the pod the operator itself rendered."""
    from cocoon.api.inferencepool import InferencePoolSpec
    from cocoon.placement.render import PoolRef, Settings

    spec = InferencePoolSpec.model_validate({
        "model": {"name": "m", "repository": {"configMap": {"name": "c"}}},
        "price": {"perRequest": "7", "perInputToken": "1500", "perOutputToken": "2500",
                  "perReasoningToken": "9000", "perTokens": 1000},
    })
    container = meter_container(spec, PoolRef(POOL, NS, "uid"), Settings())
    pod = {"spec": {"containers": [{"name": "triton", "args": ["--price-per-request=1"]},
                                   container]}}
    assert meters.meter_price(pod) == spec.price
    assert meters.meter_price({"spec": {"containers": [{"name": "triton"}]}}) is None
    bad = dict(container, args=[*container["args"], "--price-per-tokens=7"])
    assert meters.meter_price({"spec": {"containers": [bad]}}) is None


async def test_a_replaced_pod_neither_loses_nor_double_counts(env: Env, api: Client) -> None:
    """The old pod's meter reported 100; its pod is replaced on the same node and the new
    meter (its own journal, sequence from 1) reports 40: owed is 140, the old figure stays, and
    the new meter's credit counts only what was actually spent."""
    env.add_channel(creditWindow=str(10**6), deposit=str(2 * TON))
    await env.reconcile()
    first = await api.post("/usage/v1/reports", json=signed_report(env.meter_key, 100, 7))
    assert first.status == 200
    # the pod is replaced: its record goes, the new pod's meter registers with a new journal
    new_key = keys.generate()
    pool = env.kube.objects[(INFERENCE_POOLS.plural, NS, POOL)]
    pool["status"]["meters"] = [meter_record(new_key, pod="pool-1")]
    env.kube.put(INFERENCE_POOLS, pool)
    late = await api.post("/usage/v1/reports", json=signed_report(env.meter_key, 120, 8))
    assert late.status == 403, "the dead pod's key is no longer registered"
    answer = await api.post("/usage/v1/reports", json=signed_report(new_key, 40, 1))
    assert answer.status == 200, await answer.text()
    status = await env.status()
    assert status["owed"] == "140"
    assert sorted((m["instance"], m["costNanoton"]) for m in status["meters"]) == sorted(
        [(journal_of(env.meter_key), "100"), (journal_of(new_key), "40")])
    document = await (await api.get(
        f"/usage/v1/credit/{NS}/{POOL}", headers=credit_headers(new_key))).json()
    [entry] = document["channels"]
    promised = int(status.get("promised") or 0)
    cap = min(int(status["deposited"]), promised + 10**6)
    # its own 40 plus all that is left: the dead instance takes no share, nor is it forgotten
    assert int(entry["creditLimitNanoton"]) == 40 + max(0, cap - 140)


async def test_live_meters_limits_never_add_up_past_the_credit(env: Env, api: Client) -> None:
    """Two live meters of the pool, one that has reported and one that has not yet: each gets
    its own cost plus half of what is left, so the two limits together stay within owed plus
    remaining (counting only reporters used to give the reporter all of it, and the newcomer
    half again on top)."""
    env.add_channel(creditWindow=str(10**6), deposit=str(2 * TON))
    await env.reconcile()
    newcomer = keys.generate()
    pool = env.kube.objects[(INFERENCE_POOLS.plural, NS, POOL)]
    pool["status"]["meters"] = [meter_record(env.meter_key), meter_record(newcomer, pod="pool-1")]
    env.kube.put(INFERENCE_POOLS, pool)
    answer = await api.post("/usage/v1/reports", json=signed_report(env.meter_key, 100, 1))
    assert answer.status == 200, await answer.text()
    status = await env.status()
    cap = min(int(status["deposited"]), int(status.get("promised") or 0) + 10**6)
    remaining = max(0, cap - int(status["owed"]))
    limits = []
    for key in (env.meter_key, newcomer):
        document = await (await api.get(
            f"/usage/v1/credit/{NS}/{POOL}", headers=credit_headers(key))).json()
        [entry] = document["channels"]
        limits.append(int(entry["creditLimitNanoton"]))
    assert sum(limits) <= int(status["owed"]) + remaining
    assert sorted(limits) == sorted([100 + remaining // 2 + remaining % 2 * (
        journal_of(env.meter_key) < journal_of(newcomer)), remaining // 2 + remaining % 2 * (
        journal_of(newcomer) < journal_of(env.meter_key))])
