"""The whole story on the local stack: attested nodes, a pool, a funded channel, paid requests,
promises and claims, running out of credit and topping up, and the close.

`cocoon dev demo-sim` (`make demo-sim`) tells it to a person; e2e/test_paid_inference.py
checks every step of it.
Each step returns what it observed, so both can say (or assert) what happened. The stack it runs
on is `simstack`, the caller's requests are `calls`, and what it adds up to is `summary`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cocoon import keys
from cocoon.client.call import describe
from cocoon.devstack import money
from cocoon.devstack.calls import Call, chat_stream, generate_stream, http_json
from cocoon.devstack.podstandin import PodStandIn
from cocoon.devstack.process import wait_for
from cocoon.devstack.simstack import NAMESPACE, POOL, Say, SimStack, quiet
from cocoon.devstack.summary import Sample, Summary, ton
from cocoon.meter import usage_report
from cocoon.ton import emulator
from cocoon.ton.tvm import Address
from cocoon.ton.units import TON


class Story(SimStack):
    """The money told on the stack: channels opened, paid for, run dry, topped up and closed."""

    def __init__(self, workdir: Path | None = None, say: Say = quiet) -> None:
        super().__init__(workdir, say)
        self.samples: list[Sample] = []
        self.started = time.monotonic()

    # -- the channel ----------------------------------------------------------------------------

    def open_channel(
        self, name: str, payer_key_json: str, deposit: int, window: int, threshold: int
    ) -> str:
        """Create and fund a PaymentChannel; returns the caller credential from its Secret."""
        assert self.chain is not None and self.operator is not None
        secret_name = f"{name}-payer"
        self.cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": secret_name, "namespace": NAMESPACE},
                "data": {"key": base64.b64encode(payer_key_json.encode()).decode()},
            }
        )
        self.cluster.kubectl(
            "create",
            "rolebinding",
            "cocoon-operator-secrets",
            "-n",
            NAMESPACE,
            "--clusterrole=cocoon-operator-secrets",
            "--serviceaccount=cocoon-system:cocoon-operator",
            check=False,
        )
        self.cluster.apply(
            {
                "apiVersion": "cocoon.dev/v1alpha1",
                "kind": "PaymentChannel",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {
                    "poolName": POOL,
                    "payer": {"keySecretRef": {"name": secret_name}},
                    "deposit": str(deposit),
                    "creditWindow": str(window),
                    "claim": {"threshold": str(threshold), "intervalSeconds": 3600},
                    "closeDelaySeconds": 60,
                },
            }
        )
        wait_for(
            lambda: (
                self.channel(name).get("state") == "Open"
                and self._condition("paymentchannel.cocoon.dev", name, "Ready").get("status")
                == "True"
            ),
            timeout=90,
            what=f"channel {name} open",
        )
        status = self.channel(name)
        secret = self.get("secret", status["credentialSecret"], "-n", NAMESPACE)
        self.say(
            f"PaymentChannel {name} deployed and funded with {ton(deposit)} at "
            f"{status['address']}; the caller credential is in Secret "
            f"{status['credentialSecret']}"
        )
        return base64.b64decode(secret["data"]["token"]).decode()

    def channel(self, name: str) -> dict[str, Any]:
        return dict(
            self.get("paymentchannel.cocoon.dev", name, "-n", NAMESPACE).get("status") or {}
        )

    def sample(self, name: str) -> Sample:
        status = self.channel(name)
        point = Sample(
            time.monotonic() - self.started,
            int(status.get("owed", 0)),
            int(status.get("claimed", 0)),
            int(status.get("creditLeft", 0)),
        )
        self.samples.append(point)
        return point

    def first_call(self, pod: PodStandIn, token: str) -> Call:
        """Until the meter's next credit poll knows a new channel, its callers get 401."""
        calls: list[Call] = []

        def served() -> bool:
            calls.append(generate_stream(self.caller, pod.http_url, token, "hello", 1))
            return calls[-1].status == 200

        wait_for(served, timeout=30, what="the meter to learn the channel's credit", interval=0.5)
        return calls[-1]

    def serve(self, pod: PodStandIn, token: str, count: int, channel: str) -> list[Call]:
        """Paid calls as a developer makes them: OpenAI chat streams through the `openai` SDK."""
        calls = []
        for i in range(count):
            prompt = f"a private prompt {i}"
            calls.append(chat_stream(self.caller, pod.http_url, token, prompt, 16))
            if i % 5 == 4:
                self.sample(channel)
        return calls

    def refused_unattested_report(self) -> tuple[int, str]:
        """A usage report signed by a key no attested node bound: what a forged meter sends."""
        assert self.operator is not None
        report = usage_report.UsageReport(
            meter_public_key=keys.public_bytes(key := keys.generate()).hex(),
            journal_id="0" * 32,
            pool=f"{NAMESPACE}/{POOL}",
            channel=f"{NAMESPACE}/main",
            units=usage_report.UsageUnits(requests=1000, input_tokens=0, output_tokens=0),
            cost_nanoton=str(100 * TON),
            journal_sequence=1,
            issued_at=datetime.now(UTC).replace(microsecond=0),
        )
        status, answer = http_json(
            "POST",
            f"{self.operator.api_url}/usage/v1/reports",
            usage_report.sign(report, key).to_api(),
            context=self.operator.tls,
        )
        reason = answer.get("error", {}).get("reason", "") if isinstance(answer, dict) else ""
        return status, reason

    def rejected_reports(self, reason: str) -> int:
        """The operator's own count of refused usage reports (forgeries write nothing else)."""
        assert self.operator is not None
        sample = f'cocoon_usage_reports_rejected_total{{reason="{reason}"}}'
        return int(self.operator.metric(sample))

    def close(self, name: str, payer: Address) -> tuple[int, str]:
        """Delete the channel: final claim, close, the delay passes, the payer gets the rest.

        Returns what the payer's wallet gained and the channel's address."""
        assert self.chain is not None
        url = self.chain.url
        before = self.balance(payer)
        self.cluster.kubectl(
            "delete", "paymentchannel.cocoon.dev", name, "-n", NAMESPACE, "--wait=false"
        )
        wait_for(
            lambda: self.channel(name).get("state") == "Closing", timeout=90, what=f"{name} closing"
        )
        self.sample(name)
        books = money.reconciled(url, f"{NAMESPACE}/{name}", self.cluster.kubeconfig)
        self.say(
            f"channel closing, its ledger agrees with the chain (`cocoon ton ledger "
            f"{NAMESPACE}/{name}`); the provider may still claim during the close delay; "
            "time-travelling the emulator past it"
        )
        asyncio.run(emulator.travel(url, 61))
        wait_for(
            lambda: not self.get("paymentchannel.cocoon.dev", name, "-n", NAMESPACE),
            timeout=90,
            what=f"{name} withdrawn and released",
        )
        return self.balance(payer) - before, books.address


def run_out_and_top_up(
    story: Story, pod: PodStandIn, payer_key: str, refused: dict[int, int]
) -> list[Call]:
    """A tiny channel runs dry (402), then a top-up lets calls through without any restart."""
    say = story.say
    small = story.open_channel(
        "small", payer_key, deposit=TON // 50, window=TON // 50, threshold=TON
    )
    small_calls = [story.first_call(pod, small)]
    while small_calls[-1].status == 200 and len(small_calls) < 50:
        small_calls.append(generate_stream(story.caller, pod.http_url, small, "spend it all", 16))
    if small_calls[-1].status != 402:
        raise RuntimeError(f"credit never ran out: {small_calls[-1]}")
    refused[402] = refused.get(402, 0) + 1
    say(
        f"channel small ran out of credit after {len(small_calls) - 1} calls: 402 "
        f"({small_calls[-1].error[:90]}...)"
    )
    story.cluster.kubectl(
        "patch",
        "paymentchannel.cocoon.dev",
        "small",
        "-n",
        NAMESPACE,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"deposit": str(TON // 10)}}),
    )
    resumed = story.first_call(pod, small)
    say(f"topped up to {ton(TON // 10)}: calls resume without a restart ({resumed.status})")
    small_ok = [c for c in [*small_calls, resumed] if c.status == 200]
    small_cost = sum(c.cost for c in small_ok)
    wait_for(
        lambda: int(story.channel("small").get("owed", 0)) == small_cost,
        timeout=60,
        what="channel small's usage on the channel",
        interval=0.5,
    )

    return small_ok


def tell(story: Story, requests: int = 40) -> Summary:
    """Run the whole story; raises if any step does not happen as it should."""
    say = story.say
    nodes = story.start()
    payee, payer, payer_key = story.provider_and_payer()
    pod = story.create_pool()

    token = story.open_channel("main", payer_key, deposit=TON, window=TON // 2, threshold=TON // 20)
    calls = [story.first_call(pod, token)]
    assert story.verifier is not None and story.receipts is not None
    pinned = describe(story.verifier.pins()[0])
    say(
        "the caller verified the meter itself, on the connection, before sending a prompt "
        f"(its own policy and nonce; the operator is not asked): {pinned}"
    )
    say(
        f"sending {requests} streamed chat completions with the official openai package "
        "through the caller's verified transport (16 tokens each)"
    )
    calls += story.serve(pod, token, requests, "main")
    refused: dict[int, int] = {}
    bad = generate_stream(story.caller, pod.http_url, "not-a-credential", "x", 1)
    refused[bad.status] = refused.get(bad.status, 0) + 1
    ok = [c for c in calls if c.status == 200 and not c.error]
    if len(ok) != len(calls):
        raise RuntimeError(f"paid calls failed: {[c for c in calls if c not in ok][:3]}")
    cost = sum(c.cost for c in ok)
    receipted = story.receipts.verify(f"{NAMESPACE}/main")
    if not receipted.ok or receipted.channel_cost(f"{NAMESPACE}/main") != cost:
        raise RuntimeError(f"the caller's receipts do not add up: {receipted}")
    say(
        f"{len(ok)} calls served, {sum(c.tokens for c in ok)} tokens, {ton(cost)} by the "
        f"callers' own receipts; a call with a bad credential got {bad.status}"
    )

    wait_for(
        lambda: int(story.channel("main").get("owed", 0)) == cost,
        timeout=60,
        what="the meter's signed usage to reach the channel",
        interval=0.5,
    )
    wait_for(
        lambda: int(story.channel("main").get("claimed", 0)) > 0,
        timeout=60,
        what="the provider's first claim",
        interval=0.5,
    )
    story.sample("main")
    say(
        f"owed {ton(cost)}; the operator signed promises and claimed "
        f"{ton(int(story.channel('main')['claimed']))} so far"
    )

    status, reason = story.refused_unattested_report()
    if status != 403:
        raise RuntimeError(f"a forged usage report was not refused: {status} {reason}")
    say(f"a usage report signed by a key no meter registered was refused ({status} {reason})")

    small_ok = run_out_and_top_up(story, pod, payer_key, refused)
    small_cost = sum(c.cost for c in small_ok)

    rejected = story.rejected_reports("unattested")
    refund, main_address = story.close("main", payer)
    final = story.samples[-1]
    if final.claimed != final.owed:
        raise RuntimeError(f"the close left usage unclaimed: {final}")
    assert story.chain is not None
    books = money.settle(
        story.chain.url, story.cluster.kubeconfig, f"{NAMESPACE}/small", payee=payee,
        payer=payer, closed=main_address, closed_owed=final.owed,
    )
    closed = books.closed
    if refund != closed.deposits - closed.claimed - books.payer_fees:
        raise RuntimeError(
            f"the payer got back {refund}, not deposits {closed.deposits} - claimed "
            f"{closed.claimed} - fees {books.payer_fees}"
        )
    say(
        f"closed: the provider received {ton(books.payee_received)} for {ton(books.claimed)} "
        f"claimed, {ton(books.payee_fees)} in fees; {ton(refund)} went back to the payer, "
        f"{ton(books.payer_fees)} in fees: every figure read from the chain"
    )
    return Summary(
        nodes_attested=len(nodes),
        requests_ok=len(ok) + len(small_ok),
        requests_refused=refused,
        output_tokens=sum(c.tokens for c in [*ok, *small_ok]),
        cost_seen_by_callers=cost + small_cost,
        owed=books.owed,
        claimed=books.claimed,
        unclaimed=books.unclaimed,
        payee_received=books.payee_received,
        payee_fees=books.payee_fees,
        payer_refund=refund,
        closed_deposits=books.closed.deposits,
        closed_claimed=books.closed.claimed,
        payer_fees=books.payer_fees,
        rejected_reports=rejected,
        samples=list(story.samples),
    )
