"""Reaction time: a meter's usage report → the new usage visible in the credit another meter polls.

The real local control plane, the operator as a process with its production HTTP API (TLS,
signed requests, rate limits as shipped), the chain emulator as the chain. Pool `pool` has two
registered meters (replicas) A and B sharing one funded, Open PaymentChannel. Each run, A POSTs
its signed cumulative report (its cost grows by STEP), and B polls its signed credit document
until its limit is exactly its share of the channel's remaining credit with that cost taken off
(`accounting.meter_limit`, the operator's own formula). The figure is from A's POST to the first
poll that shows it.

Why B: a meter's own limit is its reported cost plus its share of what remains, so its own report
leaves its limit where it was (it subtracts its own spending locally, from its journal); the
report is what the channel's other meters must see.

What a meter sees in production adds its poll interval (read from `OperatorCreditSource`) on
top: worst case = operator latency + poll interval; and A's meter sends its report at most one
report interval (`ServeOptions.report_interval_seconds`) after journaling the call.

Run: .venv/bin/python bench/bench_credit_reaction.py [--runs 30] → the
`usage_report_to_meter_credit` entry of bench/results/reactions.json
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import inspect
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_reactions import CREDIT_KEY, OUT, summary
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cocoon import keys
from cocoon.devstack.binaries import ensure_binaries
from cocoon.devstack.calls import http_json
from cocoon.devstack.cluster import LocalCluster
from cocoon.devstack.meters import (
    allow_secrets,
    journal_of,
    payer_and_channel,
    post_report,
    registered_meters,
    report,
    signed_credit,
)
from cocoon.devstack.process import wait_for
from cocoon.devstack.stack import (
    Operator,
    install_crds,
    install_security,
    operator_kubeconfig,
)
from cocoon.meter.operator_link import OperatorCreditSource
from cocoon.meter.server import ServeOptions
from cocoon.ton import accounting, emulator
from cocoon.ton.tvm import raw
from cocoon.ton.units import TON
from cocoon.ton.wallet import wallet_address

NAMESPACE = "bench"
STEP = 1_000_003  # nanoton per run: odd, so the meters' shares exercise the division's remainder
POLL_S = 0.05
DEPOSIT = 2 * TON
WINDOW = 10 * TON  # above the deposit: the cap is the deposit, whatever has been promised
NOTE = (
    "first and last run. B's limit is its half of what remains after A's cost; A's is its cost "
    "plus the other half: the pool's live meters share the remaining credit whether they have "
    "reported yet or not (credit_api.credit_document), so the two limits add up to at most owed "
    "plus remaining"
)


def channel(cluster: LocalCluster) -> dict[str, Any]:
    result = cluster.kubectl(
        "get", "paymentchannel.cocoon.dev", "ch", "-n", NAMESPACE, "-o", "json", check=False
    )
    return dict(json.loads(result.stdout)) if result.returncode == 0 else {}


def limit(document: Any) -> int | None:
    channels = document.get("channels") if isinstance(document, dict) else None
    return int(channels[0]["creditLimitNanoton"]) if channels and len(channels) == 1 else None


def open_channel(cluster: LocalCluster, chain_url: str) -> int:
    """A funded managed-signing channel for pool `pool`, open; its deposit on chain."""
    payer_key = keys.generate()
    asyncio.run(emulator.faucet(chain_url, wallet_address(keys.public_bytes(payer_key)), 5 * TON))
    allow_secrets(cluster, NAMESPACE)
    cluster.apply(
        *payer_and_channel(
            NAMESPACE,
            payer_key,
            deposit=str(DEPOSIT),
            creditWindow=str(WINDOW),
            claim={"threshold": str(DEPOSIT), "intervalSeconds": 3600},  # no claim meanwhile
        )
    )

    def is_open() -> bool:
        status = channel(cluster).get("status") or {}
        return bool(
            status.get("state") == "Open" and status.get("credentialSha256")
            and status.get("maxPrice")
        )  # fmt: skip

    wait_for(is_open, timeout=180, what="the channel open", interval=0.2)
    return int(channel(cluster)["status"]["deposited"])


def runs(
    operator: Operator, meters: list[Ed25519PrivateKey], deposited: int, count: int
) -> dict[str, Any]:
    """`count` reports from A, each timed until B's credit document shows it exactly."""
    a, b = meters
    ja, jb = journal_of(a), journal_of(b)

    def expected(cost: int) -> int:
        remaining = accounting.credit_left(deposited, 0, WINDOW, cost)
        return accounting.meter_limit({ja: cost}, {ja, jb}, jb, remaining)

    # both meters' records reach the operator's view; a first report makes the channel A's
    post_report(operator, report(a, NAMESPACE, 0, 0))
    for key in meters:

        def served(key: Ed25519PrivateKey = key) -> bool:
            return limit(signed_credit(operator, NAMESPACE, key)[1]) is not None

        wait_for(served, timeout=60, what="the credit document", interval=0.2)
    visible, accepted, polls, limits = [], [], [], []
    own: list[int | None] = []
    rate_limited = 0
    url = f"{operator.api_url}/usage/v1/reports"
    for k in range(1, count + 1):
        cost = k * STEP
        body = report(a, NAMESPACE, cost, k)
        start = time.monotonic()
        code, answer = http_json("POST", url, body, context=operator.tls)
        accepted.append(time.monotonic() - start)
        if code != 200:
            raise RuntimeError(f"report {k} refused: {code} {answer}")
        tries = 0
        deadline = start + 60
        while True:
            tries += 1
            code, document = signed_credit(operator, NAMESPACE, b)
            rate_limited += code == 429
            if code == 200 and limit(document) == expected(cost):
                visible.append(time.monotonic() - start)
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"run {k}: B's limit {limit(document)} != {expected(cost)}")
            time.sleep(POLL_S)
        polls.append(tries)
        limits.append(expected(cost))
        # what A itself is granted meanwhile (B is not among A's sharers until B reports)
        own.append(limit(signed_credit(operator, NAMESPACE, a)[1]))
        time.sleep(1.0)  # a meter reports at most once per report interval (1 s)
    return {
        "visible": visible, "accepted": accepted, "polls": polls, "limits": limits,
        "own": own, "rate_limited": rate_limited,
    }  # fmt: skip


def record(section: dict[str, Any]) -> None:
    """Into reactions.json beside the other reactions (bench_reactions keeps it when it reruns)."""
    result = json.loads(OUT.read_text()) if OUT.exists() else {}
    result.pop("not_measured", None)
    result[CREDIT_KEY] = section
    OUT.write_text(json.dumps(result, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--concurrent", default="", help="what else ran on the machine meanwhile")
    args = parser.parse_args()
    poll_s = inspect.signature(OperatorCreditSource).parameters["poll_seconds"].default
    report_s = {f.name: f.default for f in dataclasses.fields(ServeOptions)}[
        "report_interval_seconds"
    ]
    load_before = os.getloadavg()
    cluster = LocalCluster(Path(tempfile.mkdtemp(prefix="cocoon-credit-")), ensure_binaries())
    operator = None
    try:
        cluster.start()
        install_crds(cluster)
        install_security(cluster)
        cluster.kubectl("create", "namespace", NAMESPACE)
        with emulator.start() as chain:
            payee = wallet_address(keys.public_bytes(keys.generate()))
            env = {"COCOON_CHAIN_URL": chain.url, "COCOON_PAYOUT_ADDRESS": raw(payee)}
            operator = Operator(cluster, operator_kubeconfig(cluster), env=env)
            operator.start()
            meters = registered_meters(cluster, NAMESPACE, 2)  # the pool first: price pinned
            deposited = open_channel(cluster, chain.url)
            samples = runs(operator, meters, deposited, args.runs)
            operator.stop()
            operator = None
        visible = summary(samples["visible"])
        section = {
            "operator": visible,
            "report_accepted": summary(samples["accepted"]),
            "polls_until_visible": samples["polls"],
            "rate_limited_polls": samples["rate_limited"],
            "meter_poll_interval_s": poll_s,
            "meter_report_interval_s": report_s,
            "worst_case_staleness_s": round(visible["max_s"] + poll_s, 2),
            "worst_case_from_journal_s": round(visible["max_s"] + poll_s + report_s, 2),
            "method": "meter A POSTs its signed cumulative report (HTTPS, the operator's "
            "production route); meter B polls its signed credit document every 50 ms from the "
            "POST on (each poll a fresh TLS connection) until its limit is exactly its share of "
            "the deposit less A's cost (accounting.meter_limit): the remaining credit less "
            "exactly that cost; 1 s between runs (the report interval). Worst case "
            "staleness = max operator latency + the meter's poll interval "
            "(OperatorCreditSource.poll_seconds); from journal adds the report interval",
            "deposited_nanoton": deposited,
            "observed_limits_nanoton": {
                "B (polling)": [samples["limits"][0], samples["limits"][-1]],
                "A (reporting)": [samples["own"][0], samples["own"][-1]],
                "note": NOTE,
            },
            "step_nanoton": STEP,
            "load_average_before": [round(x, 1) for x in load_before],
            "load_average_after": [round(x, 1) for x in os.getloadavg()],
            "machine": f"{os.cpu_count()} cores shared by the control plane, operator, chain "
            "emulator, the poller and other agents' work",
            "command": f"python bench/bench_credit_reaction.py --runs {args.runs}",
            "concurrent": args.concurrent or "not stated",
        }
        print(json.dumps(section, indent=2))
        record(section)
    finally:
        if operator is not None:
            operator.stop()
        cluster.stop()
        cluster.remove_workdir()


if __name__ == "__main__":
    main()
