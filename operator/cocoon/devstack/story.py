"""The whole story on the local stack: attested nodes, a pool, a funded channel, paid requests,
promises and claims, running out of credit and topping up, and the close.

`cocoon dev demo-sim` (`make demo-sim`) tells it to a person; e2e/test_paid_inference.py
checks every step of it.
Each step returns what it observed, so both can say (or assert) what happened.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import openai
import yaml

from cocoon import keys
from cocoon.agent.simulated import SimulatedTee
from cocoon.client import ReceiptStore, VerifiedTransport, Verifier
from cocoon.client import policy as client_policy
from cocoon.client.call import describe
from cocoon.devstack import money
from cocoon.devstack.binaries import ensure_binaries
from cocoon.devstack.cluster import LocalCluster
from cocoon.devstack.gpunode import GpuNode
from cocoon.devstack.process import Supervisor, wait_for
from cocoon.devstack.stack import (
    Agents,
    Operator,
    PodStandIn,
    install_crds,
    install_security,
    operator_kubeconfig,
    simulated_policy,
    simulated_tee,
    stand_in,
)
from cocoon.devstack.triton import configmap_data
from cocoon.meter import usage_report
from cocoon.ton import emulator, keyfile
from cocoon.ton.tvm import Address, raw
from cocoon.ton.wallet import wallet_address

TON = 1_000_000_000
NAMESPACE = "demo"
POOL = "chat"
MODEL = "tokens"
PRICE = {"perRequest": str(TON // 1000), "perOutputToken": str(TON // 5000)}  # 1 and 0.2 mTON
Say = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass
class Call:
    """One request as the caller saw it."""

    status: int
    tokens: int = 0
    cost: int = 0
    receipt_cost: int | None = None
    error: str = ""


@dataclass
class Sample:
    """The channel over time, for the picture."""

    at: float
    owed: int
    claimed: int
    credit_left: int


@dataclass
class Summary:
    nodes_attested: int
    requests_ok: int
    requests_refused: dict[int, int]
    output_tokens: int
    cost_seen_by_callers: int
    owed: int
    claimed: int
    unclaimed: int  # signed but not yet claimed (promised - claimed on chain)
    payee_received: int
    payee_fees: int  # claim charges (the ledgers) and the payee wallet's receiving fees
    payer_refund: int
    closed_deposits: int  # the closed channel's deposits and claims
    closed_claimed: int
    payer_fees: int  # the closed channel's fees the payer bore, and its refund's receiving fee
    rejected_reports: int
    samples: list[Sample] = field(default_factory=list)

    def table(self) -> str:
        rows = [
            ("nodes attested (SEV-SNP + 1 GPU each, simulated TEE)", str(self.nodes_attested)),
            ("paid requests served", str(self.requests_ok)),
            (
                "requests refused",
                ", ".join(f"{n}x {c}" for c, n in sorted(self.requests_refused.items())) or "none",
            ),
            ("output tokens metered", str(self.output_tokens)),
            ("cost the callers were told", ton(self.cost_seen_by_callers)),
            ("owed on the channels (signed meter reports)", ton(self.owed)),
            ("claimed on chain by the provider (both channels)", ton(self.claimed)),
            ("signed, not yet claimed", ton(self.unclaimed)),
            ("provider wallet received (claimed less fees)", ton(self.payee_received)),
            ("  fees the provider's side paid (read on chain)", ton(self.payee_fees)),
            ("refunded to the payer at close", ton(self.payer_refund)),
            ("  fees the payer's side paid (read on chain)", ton(self.payer_fees)),
            ("usage reports refused (key of no registered meter)", str(self.rejected_reports)),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def ton(nanoton: int) -> str:
    return f"{nanoton / TON:.6f} TON"


def http_json(
    method: str, url: str, body: Any = None, token: str = "",
    context: ssl.SSLContext | None = None, *, headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json", **(headers or {})}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310 - loopback URLs of our own stack
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:  # noqa: S310
            text, status = response.read().decode(), response.status
    except urllib.error.HTTPError as exc:
        text, status = exc.read().decode(), exc.code
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def generate_stream(
    http: httpx2.Client, base_url: str, token: str, prompt: str, max_tokens: int
) -> Call:
    """A streamed generation through the caller's verified client: the endpoint is attested on
    the connection before the prompt leaves, and the stream's signed receipt is checked and
    kept. The cost is the receipt's (and the meter's closing `cocoon.usage` event's)."""
    body = {"text_input": prompt, "max_tokens": max_tokens}
    with http.stream(
        "POST", f"{base_url}/v2/models/{MODEL}/generate_stream", json=body,
        headers={"Authorization": f"Bearer {token}"}, timeout=60,
    ) as response:
        if response.status_code != 200:
            return Call(response.status_code, error=response.read().decode()[:300])
        call, event = Call(response.status_code), ""
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data = json.loads(line.split(":", 1)[1])
                if event == "cocoon.usage":
                    call.cost = int(data["costNanoton"])
                elif event == "cocoon.receipt":
                    call.receipt_cost = int(data["receipt"]["costNanoton"])
                elif "error" in data:
                    call.error = str(data["error"])
                else:
                    call.tokens += 1
                event = ""
        return call


def chat_stream(
    http: httpx2.Client, base_url: str, token: str, prompt: str, max_tokens: int
) -> Call:
    """A streamed chat completion with the official `openai` package, unchanged but for the base
    URL, the key and the caller's verified client: attested before the prompt leaves, its signed
    receipt checked and kept. The cost is the one the final usage chunk reports under `cocoon`."""
    client = openai.OpenAI(
        base_url=f"{base_url}/v1", api_key=token, http_client=http, max_retries=0, timeout=60
    )
    call = Call(200)
    try:
        with client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens,
            stream=True, stream_options={"include_usage": True},
        ) as stream:
            for chunk in stream:
                if chunk.usage is not None:
                    call.tokens = chunk.usage.completion_tokens
                    call.cost = int((chunk.model_extra or {})["cocoon"]["cost_nanoton"])
    except openai.APIStatusError as exc:
        return Call(exc.status_code, error=exc.message[:300])
    except openai.APIError as exc:  # an error event inside the stream
        call.error = exc.message[:300]
    return call


class Story:
    """The local stack and the story told on it; stop() tears everything down."""

    def __init__(self, workdir: Path | None = None, say: Say = _quiet) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="cocoon-demo-"))
        self.say = say
        self.cluster = LocalCluster(self.workdir / "cluster", ensure_binaries())
        self.supervisor = Supervisor(self.workdir / "logs")
        self.chain: emulator.Emulator | None = None
        self.operator: Operator | None = None
        self.agents: Agents | None = None
        self.pods: list[PodStandIn] = []
        self.samples: list[Sample] = []
        self.started = time.monotonic()
        self.http: httpx2.Client | None = None
        self.receipts: ReceiptStore | None = None
        self.verifier: Verifier | None = None
        # the provider's payout wallet: the operator's payout address, never a tenant's choice
        self.payee = wallet_address(keys.public_bytes(keys.generate()))

    # -- the stack -----------------------------------------------------------------------------

    def start(self, nodes: int = 2) -> list[str]:
        self.say(
            "starting the control plane (etcd, kube-apiserver with RBAC, controller-manager,"
            " scheduler, kwok)"
        )
        self.cluster.start()
        install_crds(self.cluster)
        install_security(self.cluster)
        self.say("starting the TON chain emulator (@ton/sandbox, the real TVM)")
        self.chain = emulator.start()
        self.say("starting the operator under the Helm chart's ServiceAccount and RBAC")
        self.operator = Operator(
            self.cluster,
            operator_kubeconfig(self.cluster),
            env={"COCOON_CHAIN_URL": self.chain.url, "COCOON_PAYOUT_ADDRESS": raw(self.payee)},
        )
        self.operator.start()
        simulated = simulated_tee(self.workdir / "simulated-tee")
        self.cluster.apply(simulated_policy(simulated, gpus=1))
        self.agents = Agents(self.cluster, self.operator, simulated)
        names = [f"gpu-node-{i}" for i in range(nodes)]
        self.cluster.add_nodes(*(GpuNode(n, gpus=1, tee="sev-snp") for n in names))
        self.say(
            f"{nodes} confidential GPU nodes joined; their agents answer the operator's "
            "challenges with simulated SEV-SNP and NVIDIA evidence"
        )
        for name in names:
            self.agents.start(name, "--gpus", "1")
        for name in names:
            wait_for(lambda n=name: self._attested(n), timeout=60, what=f"{name} attested")  # type: ignore[misc]
        self.say(f"all {nodes} nodes verified: labelled cocoon.dev/attested=true, taints lifted")
        self._caller(simulated)
        return names

    def _caller(self, simulated: Path) -> None:
        """The developer's own client: a policy file it owns (the simulated TEE's roots, the
        measurement it pins, one GPU) and the verified transport that keeps every receipt."""
        spec = SimulatedTee.load(simulated).policy_document("caller", gpus=1)["spec"]
        policy_file = self.workdir / "caller-policy.yaml"
        policy_file.write_text(yaml.safe_dump(spec))
        self.receipts = ReceiptStore(self.workdir / "receipts.db")
        self.verifier = Verifier(client_policy.load(policy_file))
        self.http = httpx2.Client(transport=VerifiedTransport(self.verifier, store=self.receipts))

    def stop(self) -> None:
        if self.http is not None:
            self.http.close()
        if self.receipts is not None:
            self.receipts.close()
        for pod in self.pods:
            pod.stop()
        self.supervisor.stop_all()
        if self.agents is not None:
            self.agents.stop_all()
        if self.operator is not None:
            self.operator.stop()
        if self.chain is not None:
            self.chain.stop()
        self.cluster.stop()

    @property
    def caller(self) -> httpx2.Client:
        assert self.http is not None, "start() the story first"
        return self.http

    def remove(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _attested(self, node: str) -> bool:
        labels = self.get("node", node).get("metadata", {}).get("labels", {})
        return bool(labels.get("cocoon.dev/attested") == "true")

    def get(self, *args: str) -> dict[str, Any]:
        result = self.cluster.kubectl("get", *args, "-o", "json", check=False)
        return json.loads(result.stdout) if result.returncode == 0 else {}

    # -- people ----------------------------------------------------------------------------------

    def provider_and_payer(self) -> tuple[Address, Address, str]:
        """A provider payout wallet and a funded payer wallet; the payer's key as Secret JSON."""
        assert self.chain is not None
        payer_key = keys.generate()
        payer = wallet_address(keys.public_bytes(payer_key))
        asyncio.run(emulator.faucet(self.chain.url, payer, 10 * TON))
        self.say(f"payer wallet funded with 10 TON by the emulator's faucet: {raw(payer)}")
        return self.payee, payer, keyfile.to_json(payer_key)

    def balance(self, address: Address) -> int:
        assert self.chain is not None
        return money.balance(self.chain.url, address)

    # -- the pool ----------------------------------------------------------------------------

    def create_pool(self) -> PodStandIn:
        self.cluster.kubectl("create", "namespace", NAMESPACE, check=False)
        model_files = configmap_data(MODEL)
        self.cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "chat-models", "namespace": NAMESPACE},
                "data": model_files,
            }
        )
        self.cluster.apply(
            {
                "apiVersion": "cocoon.dev/v1alpha1",
                "kind": "InferencePool",
                "metadata": {"name": POOL, "namespace": NAMESPACE},
                "spec": {
                    "model": {"name": MODEL, "repository": {"configMap": {"name": "chat-models"}}},
                    "replicas": 1,
                    "gpusPerReplica": 1,
                    "teeTypes": ["sev-snp"],
                    "price": PRICE,
                    "meter": {"maxOutputTokens": 64},
                },
            }
        )
        self.say(
            "InferencePool demo/chat created; waiting for the scheduler to place it on an "
            "attested node"
        )
        wait_for(
            lambda: (
                self._condition("inferencepool.cocoon.dev", POOL, "Ready").get("status") == "True"
            ),
            timeout=90,
            what="the pool Ready",
        )
        pods = [
            p
            for p in self.get("pods", "-n", NAMESPACE, "-l", f"cocoon.dev/pool={POOL}").get(
                "items", []
            )
            if p["spec"].get("nodeName")
        ]
        pod = pods[0]
        assert self.agents is not None and self.operator is not None
        self.say(
            f"pod {pod['metadata']['name']} placed on {pod['spec']['nodeName']}; kwok only "
            "pretends to run it, so real Triton and meter processes stand in, from the "
            "pod spec the operator rendered"
        )
        running = stand_in(
            pod,
            cluster=self.cluster,
            workdir=self.workdir / "pods",
            evidence_socket=self.agents.meter_socket(pod["spec"]["nodeName"]),
            operator_url=self.operator.api_url,
            supervisor=self.supervisor,
        )
        self.pods.append(running)
        return running

    def _condition(self, kind: str, name: str, type_: str) -> dict[str, Any]:
        obj = self.get(kind, name, "-n", NAMESPACE)
        for cond in (obj.get("status") or {}).get("conditions") or []:
            if cond.get("type") == type_:
                return dict(cond)
        return {}

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
        _, text = http_json("GET", f"{self.operator.api_url}/metrics", context=self.operator.tls)
        match = re.search(
            rf'^cocoon_usage_reports_rejected_total{{reason="{reason}"}} ([0-9.]+)$',
            str(text), re.MULTILINE,
        )
        return int(float(match.group(1))) if match else 0

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
