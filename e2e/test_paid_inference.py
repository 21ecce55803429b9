"""The whole story on its own local stack, exactly as `make demo-sim` tells it: attested nodes, a
pool placed on them, real Triton behind the real meter started from the rendered pod spec, paid
streamed calls, signed usage to promises to claims, a forged meter report refused, 402 and
top-up, and the close. The summary's numbers must agree with the chain's balances."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from cryptography import x509

from cocoon.api.attestationpolicy import AttestationPolicySpec
from cocoon.attestation import endpoint
from cocoon.attestation.policy import Policy
from cocoon.client import (
    AsyncVerifiedTransport,
    KeyNotBound,
    MeasurementNotInPolicy,
    ReceiptStore,
    VerifiedTransport,
    Verifier,
)
from cocoon.devstack import picture
from cocoon.devstack.calls import MODEL, generate_stream
from cocoon.devstack.mitm import Mitm
from cocoon.devstack.process import probe_context
from cocoon.devstack.rawhttp import exchange, malformed
from cocoon.devstack.simstack import NAMESPACE
from cocoon.devstack.story import Story, tell
from cocoon.devstack.summary import Summary
from cocoon.meter.identity import MeterIdentity

pytestmark = [pytest.mark.e2e, pytest.mark.triton, pytest.mark.chain]


@pytest.fixture(scope="module")
def told(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Story, Summary]]:
    story = Story(tmp_path_factory.mktemp("story"))
    try:
        yield story, tell(story, requests=12)
    finally:
        story.stop()


def test_callers_pay_exactly_what_the_channel_owes(told: tuple[Story, Summary]) -> None:
    _, summary = told
    assert summary.nodes_attested == 2
    assert summary.requests_ok >= 13
    assert summary.output_tokens >= 12 * 16
    assert summary.cost_seen_by_callers == summary.owed > 0
    assert summary.requests_refused == {401: 1, 402: 1}


def test_the_provider_is_paid_what_was_claimed_less_fees(told: tuple[Story, Summary]) -> None:
    """Exact to the nanoton: each fee is read from the chain (the channels' ledgers, reconciled
    by `cocoon ton ledger`, and the wallets' own receiving transactions), none is estimated."""
    _, summary = told
    assert summary.owed == summary.claimed + summary.unclaimed
    assert summary.claimed > 0 and summary.payee_fees > 0
    assert summary.payee_received == summary.claimed - summary.payee_fees
    assert summary.payer_refund == (
        summary.closed_deposits - summary.closed_claimed - summary.payer_fees
    )
    assert summary.payer_refund > 0


def test_a_forged_meter_is_refused_and_counted(told: tuple[Story, Summary]) -> None:
    _, summary = told
    assert summary.rejected_reports == 1


def test_no_prompt_reaches_any_log(told: tuple[Story, Summary]) -> None:
    story, _ = told
    logs = "".join(p.read_text(errors="replace") for p in Path(story.workdir).rglob("*.log"))
    assert logs, "the stack wrote no logs at all"
    assert "a private prompt" not in logs
    assert "spend it all" not in logs


CANARY = "zebracanary7731"
CR_KINDS = "inferencepools,paymentchannels,attestednodes,attestationpolicies"


def _text(url: str, context: ssl.SSLContext | None = None) -> str:
    with urllib.request.urlopen(url, context=context, timeout=30) as response:
        return str(response.read().decode())


async def _send_broken(story: Story, token: str, secret: str) -> None:
    """Every malformed request of cocoon.devstack.rawhttp to a meter and to the operator API,
    carrying the canary in the credential, the prompt and where a parser would quote it."""
    pod, operator = story.pods[0], story.operator
    assert operator is not None
    meter_port = int(pod.http_url.rsplit(":", 1)[1])
    prompt = json.dumps({"text_input": f"{CANARY} secret prompt", "max_tokens": 1}).encode()
    generate = f"/v2/models/{MODEL}/generate"
    for name, data in malformed(generate, token, secret, prompt, CANARY).items():
        status, answer = await exchange(meter_port, data, probe_context())
        assert 400 <= status < 500 and answer["message"], ("meter", name, status, answer)
    report = json.dumps(
        {"report": {"channel": f"{NAMESPACE}/{CANARY}", "meterPublicKey": CANARY},
         "signature": CANARY}
    ).encode()
    api_port = int(operator.api_url.rsplit(":", 1)[1])
    for path in ("/usage/v1/reports", "/meters/v1/register"):
        for name, data in malformed(path, secret, secret, report, CANARY).items():
            status, answer = await exchange(api_port, data, operator.tls)
            assert 400 <= status < 500, ("operator", path, name, status, answer)
            assert answer["error"]["reason"] and answer["error"]["message"], (path, name)


def test_a_canary_reaches_no_log_event_status_or_metric(told: tuple[Story, Summary]) -> None:
    """Paid calls and broken requests carry a marked prompt and marked credentials to the real
    meters and the real operator process; then every log of the stack, every Event, every
    Cocoon object (status included) and both servers' metrics are searched for the marks and
    for the channel's real credential."""
    story, _ = told
    token = _token(story)
    pod, operator = story.pods[0], story.operator
    assert operator is not None
    secret = f"{CANARY}-credential"
    paid = generate_stream(story.caller, pod.http_url, token, f"{CANARY} a secret prompt", 4)
    assert paid.status == 200, paid.error
    stranger = generate_stream(story.caller, pod.http_url, secret, f"{CANARY} prompt", 4)
    assert stranger.status == 401
    asyncio.run(_send_broken(story, token, secret))

    logs = {
        str(p): p.read_text(errors="replace") for p in Path(story.workdir).rglob("*.log")
    }
    assert any("meter" in p for p in logs) and any("operator" in p for p in logs), list(logs)
    places = {
        **logs,
        "events": story.cluster.kubectl("get", "events", "-A", "-o", "json").stdout,
        "objects": story.cluster.kubectl("get", CR_KINDS, "-A", "-o", "json").stdout,
        "operator metrics": _text(f"{operator.api_url}/metrics", operator.tls),
        **{f"{p.pod} metrics": _text(f"{p.admin_url}/metrics") for p in story.pods},
    }
    assert '"status"' in places["objects"] and "cocoon_" in places["operator metrics"]
    for place, text in places.items():
        assert CANARY not in text, f"the canary reached {place}"
        assert token not in text, f"the channel's credential reached {place}"


def test_the_picture_shows_the_channel(told: tuple[Story, Summary]) -> None:
    _, summary = told
    drawn = picture.svg(summary.samples, "channel")
    assert drawn.startswith("<svg") and drawn.count("<polyline") == 3


# -- the caller trusts the hardware, not the provider (the meter the story runs) ----------------


def _pod_and_policy(story: Story) -> tuple[str, dict[str, Any]]:
    spec = yaml.safe_load((story.workdir / "caller-policy.yaml").read_text())
    return story.pods[0].http_url, spec


def _token(story: Story) -> str:
    """The credential of channel `small`, still open (the story closes `main`)."""
    secret = story.get("secret", "small-credential", "-n", NAMESPACE)
    return base64.b64decode(secret["data"]["token"]).decode()


def test_cocoon_call_verifies_the_meter_and_keeps_a_valid_receipt(
    told: tuple[Story, Summary], tmp_path: Path
) -> None:
    story, _ = told
    url, spec = _pod_and_policy(story)
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(spec))
    receipts_db = tmp_path / "receipts.db"
    env = {**os.environ, "COCOON_CREDENTIAL": _token(story), "COCOON_RECEIPTS": str(receipts_db)}
    done = subprocess.run(
        [sys.executable, "-m", "cocoon.cli", "call", url, "--policy", str(policy), "--model",
         "tokens", "--endpoint", "generate_stream", "--text", "hello"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    checked = subprocess.run(
        [sys.executable, "-m", "cocoon.cli", "client", "receipts", "verify"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    store = ReceiptStore(receipts_db)
    try:
        [held] = store.list()
    finally:
        store.close()
    assert held.receipt.pool == f"{NAMESPACE}/chat"
    assert int(held.receipt.cost_nanoton) > 0


def test_an_unlisted_measurement_is_refused_though_the_node_is_verified(
    told: tuple[Story, Summary],
) -> None:
    story, _ = told
    url, spec = _pod_and_policy(story)
    node = story.get("attestednode", story.pods[0].node)
    assert node["status"]["verdict"] == "Verified"  # the operator vouches for the node
    spec["snp"]["measurements"] = ["ab" * 48]  # the caller pins another build
    verifier = Verifier(Policy.from_spec(AttestationPolicySpec.model_validate(spec)))
    with httpx2.Client(transport=VerifiedTransport(verifier)) as http, pytest.raises(
        MeasurementNotInPolicy
    ):
        http.post(f"{url}/v2/models/tokens/generate", json={"text_input": "secret prompt"},
                  headers={"Authorization": f"Bearer {_token(story)}"})


async def test_a_man_in_the_middle_is_refused_before_the_prompt_leaves(
    told: tuple[Story, Summary],
) -> None:
    story, _ = told
    url, spec = _pod_and_policy(story)
    # the proxy has its own key and replays the genuine meter's own evidence (it has no TEE)
    genuine = x509.load_pem_x509_certificate(
        ssl.get_server_certificate(("127.0.0.1", int(url.rsplit(":", 1)[1]))).encode()
    )
    stolen = endpoint.evidence_in_certificate(genuine)
    assert stolen is not None
    impostor = MeterIdentity.generate()
    impostor.certificate_for(stolen)
    mitm = Mitm(int(url.rsplit(":", 1)[1]), impostor.server_context())
    await mitm.start()
    verifier = Verifier(Policy.from_spec(AttestationPolicySpec.model_validate(spec)))
    try:
        async with httpx2.AsyncClient(transport=AsyncVerifiedTransport(verifier)) as http:
            with pytest.raises(KeyNotBound):
                await http.post(
                    f"https://127.0.0.1:{mitm.port}/v2/models/tokens/generate",
                    json={"text_input": "a secret prompt"},
                    headers={"Authorization": f"Bearer {_token(story)}"},
                )
    finally:
        await mitm.stop()
    assert b"a secret prompt" not in bytes(mitm.from_client)
    assert _token(story).encode() not in bytes(mitm.from_client)


def test_the_meter_registered_its_in_memory_keys_and_no_key_file_reaches_the_pod(
    told: tuple[Story, Summary],
) -> None:
    story, _ = told
    pool = story.get("inferencepool.cocoon.dev", "chat", "-n", NAMESPACE)
    [record] = pool["status"]["meters"]
    pod = story.get("pod", record["pod"], "-n", NAMESPACE)
    assert record["node"] == pod["spec"]["nodeName"]
    assert record["podUid"] == pod["metadata"]["uid"]
    volumes = pod["spec"]["volumes"]
    assert not [v for v in volumes if "secret" in v]
    assert [v["hostPath"]["path"] for v in volumes if "hostPath" in v] == ["/var/run/cocoon/meter"]
    # the receipt key the caller pinned is the one the operator registered
    assert story.verifier is not None
    pinned = {p.receipt_public_key.hex() for p in story.verifier.pins()}
    assert record["receiptPublicKey"] in pinned
