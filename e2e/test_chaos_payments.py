"""Chaos in the payments area, on the session's real control plane and chain emulator, loopback
only, each test bounded: the chain goes away while usage waits to be claimed, and a meter's
stolen identity (and an unregistered key) floods the usage route. The operator stays up, its
statuses say what is wrong, nothing is lost or paid twice, and it recovers by itself."""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from cocoon import keys
from cocoon.devstack import money
from cocoon.devstack.cluster import LocalCluster
from cocoon.devstack.meters import (
    allow_secrets,
    payer_and_channel,
    post_report,
    registered_meter,
    report,
    signed_credit,
)
from cocoon.devstack.process import http_ok
from cocoon.devstack.stack import OPERATOR_NAMESPACE, Operator
from cocoon.ton import emulator
from cocoon.ton.tvm import Address
from cocoon.ton.units import TON
from cocoon.ton.wallet import wallet_address
from e2e.harness import condition, eventually
from e2e.test_paymentchannel import channel_status, payouts, reconciled

pytestmark = [pytest.mark.e2e, pytest.mark.chain]
PROBE_BOUND_S = 15  # chainprobe: ChainReachable tells the truth within interval 10 s + deadline 5 s
SLACK_S = 15  # a loaded test machine (2 cores shared by the whole stack)


def channel_condition(cluster: LocalCluster, namespace: str, type_: str) -> dict[str, Any]:
    return condition({"status": channel_status(cluster, namespace)}, type_)


def open_channel(cluster: LocalCluster, namespace: str, chain_url: str) -> Any:
    """A registered meter's pool and an Open, funded channel for it (claims at TON/10); the
    meter's key."""
    payer_key = keys.generate()
    asyncio.run(emulator.faucet(chain_url, wallet_address(keys.public_bytes(payer_key)), 5 * TON))
    allow_secrets(cluster, namespace)
    meter = registered_meter(cluster, namespace)  # the pool first: its price is pinned
    cluster.apply(
        *payer_and_channel(
            namespace, payer_key, claim={"threshold": str(TON // 10), "intervalSeconds": 3600}
        )
    )
    eventually(
        lambda: (
            (s := channel_status(cluster, namespace)).get("state") == "Open"
            and s.get("maxPrice")
            and condition({"status": s}, "ChainReachable").get("status") == "True"
        ),
        timeout=90,
        what="the channel open",
    )
    return meter


def test_chain_down_while_usage_waits_to_be_claimed(
    cluster: LocalCluster,
    operator: Operator,
    namespace: str,
    chain: emulator.Emulator,
    provider_payee: Address,
) -> None:
    """The emulator process is stopped (connection refused, as for a chain endpoint that is
    gone) and later started again from the chain it saved, on the same address.

    The outage is scaled down from a minute: it lasts longer than the reachability probe's
    bound (interval + deadline, 15 s), so a probe pass failed on it, and until the channel's
    reconcile failed on the chain at least twice with the usage pending (15 to 25 s here). A
    minute would only repeat the same failing probes and retries."""
    meter = open_channel(cluster, namespace, chain.url)
    log = operator.process.log if operator.process is not None else None
    assert log is not None
    unreachable = 'cocoon_chain_probes_total{result="unreachable"}'
    probes = operator.metric(unreachable)

    chain.stop()
    down_at = time.monotonic()
    try:
        seen = log.stat().st_size

        # usage that arrives meanwhile is accepted and kept; the meter's credit poll is answered
        answer = post_report(operator, report(meter, namespace, TON // 4, 1))
        assert answer == {"accepted": True, "owed": str(TON // 4)}
        assert channel_status(cluster, namespace)["owed"] == str(TON // 4)
        code, document = signed_credit(operator, namespace, meter)
        assert code == 200 and document["channels"], document

        # the statuses say what is wrong, within the probe's bound
        eventually(
            lambda: (
                channel_condition(cluster, namespace, "ChainReachable").get("status") == "False"
            ),
            timeout=PROBE_BOUND_S + SLACK_S,
            what="ChainReachable False",
        )
        print(f"ChainReachable False {time.monotonic() - down_at:.1f} s after the chain stopped")
        waiting = f"{TON // 4} nanoton of accepted usage wait to be claimed"
        ready = eventually(
            lambda: (
                (c := channel_condition(cluster, namespace, "Ready")).get("reason")
                == "ChainUnreachable"
                and waiting in c.get("message", "")
                and c
            ),
            timeout=30,
            what="Ready saying the claim waits for the chain",
        )
        assert ready["status"] == "False"
        status = channel_status(cluster, namespace)
        assert status["claimed"] == "0" and "latestPromise" not in status  # nothing claimed blind

        # hold the outage past the probe's bound (so at least one probe pass failed on this chain)
        # and two failed reconciles of the channel with the usage pending
        def attempts() -> int:
            with log.open("rb") as f:
                f.seek(seen)
                return f.read().count(f"channel {namespace}/ch blocked: ChainUnreachable".encode())

        eventually(
            lambda: (
                time.monotonic() - down_at > PROBE_BOUND_S
                and operator.metric(unreachable) > probes
                and attempts() >= 2
            ),
            timeout=2 * PROBE_BOUND_S + SLACK_S,
            what="a failed probe pass and two failed claim attempts",
        )
        assert operator.process is not None and operator.process.alive()
        assert http_ok(f"{operator.api_url}/healthz", context=operator.tls)
        print(f"chain down for {time.monotonic() - down_at:.1f} s")
    finally:  # later tests need the chain whatever happened here
        chain.restart()

    # the same chain is back: reachable again, the pending usage claimed once, to the nanoton
    status = eventually(
        lambda: (
            (s := channel_status(cluster, namespace)).get("claimed") == str(TON // 4)
            and condition({"status": s}, "ChainReachable").get("status") == "True"
            and condition({"status": s}, "Ready").get("status") == "True"
            and s
        ),
        timeout=60,
        what="the usage claimed after the chain came back",
    )
    assert status["owed"] == str(TON // 4)
    books = reconciled(cluster, namespace, chain.url)
    assert books.owed == books.claimed + books.unclaimed == TON // 4
    assert len(payouts(chain.url, provider_payee, books.address)) == 1, "paid once, not twice"
    paid, _ = money.received(chain.url, provider_payee, [books.address])
    assert paid == books.paid_out == TON // 4 - books.claim_charges, "to the nanoton"


# -- a meter flooding the usage route ----------------------------------------------------------

# tight limits on the flooded replica, so a flood from one address meets them within seconds
# even when a loaded machine answers each request slowly
FLOOD_LIMITS = {"COCOON_API_RATE_PER_SOURCE": "5", "COCOON_API_BURST_PER_SOURCE": "20"}
STOLEN, STRANGER = "127.0.0.2", "127.0.0.3"  # loopback sources: each its own bucket
HONEST_BOUND_S = 20  # an honest call answered while the flood runs, on a loaded machine
OVERSIZED = 64 * 1024  # the usage route's body limit (api_guard.BODY_LIMITS)


@pytest.fixture
def guarded(cluster: LocalCluster, operator: Operator) -> Iterator[tuple[Operator, str]]:
    """A replica that serves the API under tight per-source limits and never leads (the
    session's operator does), with a token of its own: its JTI names its requests in the API
    server's audit log."""
    token = cluster.kubectl(
        "create", "token", "cocoon-operator", "-n", OPERATOR_NAMESPACE, "--duration=1h"
    ).stdout.strip()
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    kubeconfig = cluster.token_kubeconfig(
        token, cluster.workdir / "guarded.kubeconfig", namespace=OPERATOR_NAMESPACE
    )
    replica = Operator(cluster, kubeconfig, name="guarded", env={**operator.env, **FLOOD_LIMITS})
    replica.start(lead=False)
    try:
        yield replica, str(payload["jti"])
    finally:
        replica.stop()


def bodies(meter: Any, stranger: Any, namespace: str) -> dict[str, list[bytes]]:
    """What each attacker sends, by source: the stolen identity replays the meter's accepted
    report, forges a higher cost under its signature and sends an oversized body; the stranger
    signs with a key no pool registered and sends junk."""
    accepted = report(meter, namespace, TON // 20, 1)
    forged = json.loads(json.dumps(accepted))
    forged["report"]["costNanoton"] = str(10 * TON)
    oversized = {"report": accepted["report"], "signature": "00" * OVERSIZED}
    return {
        STOLEN: [json.dumps(b).encode() for b in (accepted, forged, accepted, oversized)],
        STRANGER: [
            json.dumps(report(stranger, namespace, TON, 1)).encode(),
            b'{"report": "x"}',
        ],
    }


Counts = dict[str, collections.Counter[int]]


async def flood(
    replica: Operator, sources: dict[str, list[bytes]], counts: Counts, stop: asyncio.Event
) -> None:
    """Each source posts its bodies round robin, 16 at a time, until `stop`, counting the
    answers' status codes by source. Every refusal must say why."""
    url = f"{replica.api_url}/usage/v1/reports"

    async def worker(http: aiohttp.ClientSession, source: str, i: int) -> None:
        n = i
        while not stop.is_set():
            body = sources[source][n % len(sources[source])]
            n += 16
            headers = {"Content-Type": "application/json"}
            try:
                async with http.post(url, data=body, headers=headers) as response:
                    answer = await response.json()
            except aiohttp.ClientConnectionError:
                # a body refused unread may meet a closed connection before its 413 is read
                assert len(body) > OVERSIZED, "only an oversized body is cut off"
                counts[source][0] += 1
                continue
            assert response.status == 200 or answer["error"]["message"], answer
            counts[source][response.status] += 1

    async def one(source: str) -> None:
        connector = aiohttp.TCPConnector(ssl=replica.tls, local_addr=(source, 0), limit=16)
        async with aiohttp.ClientSession(connector=connector) as http:
            await asyncio.gather(*(worker(http, source, i) for i in range(16)))

    await asyncio.gather(*(one(s) for s in sources))


def writes_and_reads(
    cluster: LocalCluster, jti: str, namespace: str, after: int
) -> tuple[int, int]:
    """Successful writes and reads of the namespace's objects by the replica's token, in the
    audit log past line `after`."""
    writes = reads = 0
    for event in cluster.audit_events()[after:]:
        extra = (event.get("user") or {}).get("extra") or {}
        mine = f"JTI={jti}" in extra.get("authentication.kubernetes.io/credential-id", [])
        if not mine or (event.get("objectRef") or {}).get("namespace") != namespace:
            continue
        if event["verb"] in ("create", "update", "patch", "delete"):
            writes += int(event.get("responseStatus", {}).get("code", 0) < 300)
        elif event["verb"] in ("get", "list"):
            reads += 1
    return writes, reads


def test_a_meter_flooding_the_usage_route(
    cluster: LocalCluster,
    operator: Operator,
    guarded: tuple[Operator, str],
    namespace: str,
    chain_url: str,
) -> None:
    replica, jti = guarded
    meter = open_channel(cluster, namespace, chain_url)
    post_report(replica, report(meter, namespace, TON // 20, 1))  # what the thief replays
    refusals = {
        reason: replica.metric(f'cocoon_operator_api_refusals_total{{reason="{reason}"}}')
        for reason in ("rate_limited", "too_large")
    }
    rejected = {
        reason: replica.metric(f'cocoon_usage_reports_rejected_total{{reason="{reason}"}}')
        for reason in ("bad_signature", "unattested", "malformed")
    }
    audit_from = len(cluster.audit_events())

    counts: Counts = {STOLEN: collections.Counter(), STRANGER: collections.Counter()}

    async def scenario() -> tuple[Any, Any]:
        stop = asyncio.Event()
        sources = bodies(meter, keys.generate(), namespace)
        attack = asyncio.ensure_future(flood(replica, sources, counts, stop))
        try:
            # each attacker meets its rate limit; meanwhile the honest meter, from its own
            # address, reports and polls its credit as usual
            async with asyncio.timeout(HONEST_BOUND_S):
                while not all(c[429] for c in counts.values()):
                    assert not attack.done(), attack.result()
                    await asyncio.sleep(0.1)
            async with asyncio.timeout(HONEST_BOUND_S):
                honest = await asyncio.to_thread(
                    post_report, replica, report(meter, namespace, TON // 10, 2)
                )
                credit = await asyncio.to_thread(signed_credit, replica, namespace, meter)
            assert not attack.done(), "the flood ran throughout"
        finally:
            stop.set()
        await attack
        return honest, credit

    honest, (code, document) = asyncio.run(scenario())
    print({source: dict(c) for source, c in counts.items()})

    # the limits held: each attacker's bucket emptied, oversized bodies refused unread
    assert counts[STOLEN][429] and counts[STRANGER][429]
    assert counts[STOLEN][413] and set(counts[STOLEN]) <= {0, 200, 403, 413, 429}
    assert counts[STRANGER][403] and set(counts[STRANGER]) <= {400, 403, 429}
    # the honest meter was served throughout
    assert honest == {"accepted": True, "owed": str(TON // 10)}
    assert code == 200 and document["channels"], document
    assert operator.process is not None and operator.process.alive()
    assert replica.process is not None and replica.process.alive()

    # every refusal is counted with its reason
    def grew(name: str, reason: str, base: float, by: int) -> bool:
        return replica.metric(f'{name}{{reason="{reason}"}}') >= base + by

    assert grew("cocoon_operator_api_refusals_total", "rate_limited", refusals["rate_limited"],
                counts[STOLEN][429] + counts[STRANGER][429])  # fmt: skip
    assert grew("cocoon_operator_api_refusals_total", "too_large", refusals["too_large"],
                counts[STOLEN][413])  # fmt: skip
    assert grew("cocoon_usage_reports_rejected_total", "bad_signature",
                rejected["bad_signature"], counts[STOLEN][403])  # fmt: skip
    assert grew("cocoon_usage_reports_rejected_total", "unattested", rejected["unattested"], 1)
    assert grew("cocoon_usage_reports_rejected_total", "malformed", rejected["malformed"], 1)

    # nothing refused wrote anything: the channel holds the honest report only, and the
    # replica's one write in the flood was the honest report's
    after = channel_status(cluster, namespace)
    assert after["owed"] == str(TON // 10) and "rejectedReports" not in after
    assert [m["journalSequence"] for m in after["meters"]] == [2]
    writes, reads = eventually(
        lambda: (r := writes_and_reads(cluster, jti, namespace, audit_from))[0] >= 1 and r,
        timeout=30,
        what="the honest report's write in the audit log",
    )
    assert writes == 1
    # a replayed report costs two reads (it changes nothing); a refused one costs none
    assert reads <= 2 * counts[STOLEN][200] + 8, (reads, counts)
