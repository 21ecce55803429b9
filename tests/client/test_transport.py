"""The caller's transport against a real TLS meter stand-in: accepted only when the hardware
proves it holds this connection's key, refused before any request byte otherwise."""

from __future__ import annotations

import json
import ssl
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cocoon.agent.simulated import SimulatedTee
from cocoon.attestation.evidence import NodeEvidence
from cocoon.attestation.policy import Policy
from cocoon.client import (
    AsyncVerifiedTransport,
    EvidenceTooOld,
    EvidenceUnavailable,
    KeyNotBound,
    MeasurementNotInPolicy,
    NonceMismatch,
    PlaintextRefused,
    ReceiptRefused,
    ReceiptStore,
    VerifiedTransport,
    Verifier,
)
from cocoon.client.transport import EXTENSION
from cocoon.devstack.mitm import Mitm
from cocoon.meter.identity import MeterIdentity

from .conftest import MeterFactory
from .fakemeter import CREDENTIAL, LoopThread

AUTH = {"Authorization": f"Bearer {CREDENTIAL}"}
PROMPT = "the secret prompt 7f3a"


def _generate(client: httpx2.Client, url: str) -> httpx2.Response:
    return client.post(f"{url}/v2/models/llm/generate", json={"text_input": PROMPT}, headers=AUTH)


@pytest.mark.parametrize("certificate_evidence", [True, False])
def test_genuine_endpoint_is_accepted(
    meter_at: MeterFactory, verifier: Verifier, store: ReceiptStore, certificate_evidence: bool
) -> None:
    verifier.certificate_evidence = certificate_evidence
    meter, url = meter_at()
    with httpx2.Client(transport=VerifiedTransport(verifier, store=store)) as client:
        response = _generate(client, url)
        assert response.status_code == 200
        assert response.json()["text_output"] == f"echo: {PROMPT}"
        pinned = response.extensions[EXTENSION]
        assert pinned.receipt_public_key == meter.identity.keys.receipt_public_key
        assert pinned.via == ("certificate" if certificate_evidence else "nonce")
        _generate(client, url)  # the pinned connection is reused: no second attestation
    routes = [s.path for s in meter.seen]
    if certificate_evidence:
        assert routes == ["/v2/models/llm/generate"] * 2
    else:
        # attested once, over the very connection that then carried the requests
        assert routes == ["/.well-known/cocoon/attestation"] + ["/v2/models/llm/generate"] * 2
        assert len({s.peer for s in meter.seen}) == 1
    assert len(store.list()) == 2
    assert store.verify().ok


def test_mitm_with_its_own_certificate_is_refused_before_the_request(
    meter_at: MeterFactory, verifier: Verifier, store: ReceiptStore, loop_thread: LoopThread
) -> None:
    meter, url = meter_at()
    port = int(url.rsplit(":", 1)[1])
    impostor = MeterIdentity.generate()
    # its certificate even carries the genuine meter's evidence (made for another key)
    genuine = meter.identity.evidence(bytes(32), meter.source)
    impostor.issue_certificate(lambda _d: NodeEvidence.from_dict(genuine.evidence))
    mitm = Mitm(port, impostor.server_context())
    loop_thread.run(mitm.start())
    try:
        with httpx2.Client(transport=VerifiedTransport(verifier, store=store)) as client, \
                pytest.raises(KeyNotBound, match="man in the middle"):
            _generate(client, f"https://127.0.0.1:{mitm.port}")
    finally:
        loop_thread.run(mitm.stop())
    assert PROMPT.encode() not in bytes(mitm.from_client)
    assert CREDENTIAL.encode() not in bytes(mitm.from_client)
    assert meter.posts() == []  # the genuine meter never saw the request either
    assert [s.path for s in meter.seen] == ["/.well-known/cocoon/attestation"]
    assert store.list() == []
    assert verifier.refusals == {"KeyNotBound": 1}


def test_unlisted_measurement_is_refused(
    meter_at: MeterFactory, verifier: Verifier, store: ReceiptStore
) -> None:
    meter, url = meter_at(measurement=bytes(range(48)))
    with httpx2.Client(transport=VerifiedTransport(verifier, store=store)) as client, \
            pytest.raises(MeasurementNotInPolicy) as refused:
        _generate(client, url)
    assert refused.value.reason == "MeasurementMismatch"
    assert meter.posts() == []
    assert verifier.refusals == {"MeasurementMismatch": 1}


def test_replayed_proof_for_an_old_nonce_is_refused(
    meter_at: MeterFactory, verifier: Verifier, store: ReceiptStore
) -> None:
    # the certificate's evidence is past the policy's age, so the client asks with a nonce;
    # the endpoint answers with a proof made for an earlier nonce
    meter, url = meter_at(stale_nonce=bytes(32), certificate_age=timedelta(hours=1))
    with httpx2.Client(transport=VerifiedTransport(verifier, store=store)) as client, \
            pytest.raises(NonceMismatch, match="replayed or stale"):
        _generate(client, url)
    assert meter.posts() == []


def test_old_evidence_is_refused_when_the_clock_has_moved(
    meter_at: MeterFactory, verifier: Verifier
) -> None:
    verifier.clock = lambda: time.time() + verifier.policy.max_evidence_age + 120
    meter, url = meter_at()
    # only the certificate can be too old here: the nonce route answers "now" (server clock),
    # which the client's clock sees as too far in the past
    with httpx2.Client(transport=VerifiedTransport(verifier)) as client, \
            pytest.raises(EvidenceTooOld):
        _generate(client, url)
    assert meter.posts() == []


@pytest.mark.parametrize(
    ("knob", "reason"),
    [
        ("flip_receipt_bit", "does not verify"),
        ("foreign_receipt_key", "other than the attested"),
        ("wrong_request_hash", "RequestNotReceipted"),
        ("wrong_response_hash", "ResponseNotReceipted"),
        ("no_receipt", "NoReceipt"),
    ],
)
@pytest.mark.parametrize("endpoint", ["generate", "generate_stream"])
def test_altered_receipt_is_refused(
    meter_at: MeterFactory, verifier: Verifier, store: ReceiptStore, knob: str, reason: str,
    endpoint: str,
) -> None:
    _, url = meter_at(**{knob: True})
    with httpx2.Client(transport=VerifiedTransport(verifier, store=store)) as client, \
            pytest.raises(ReceiptRefused, match=reason):
        client.post(f"{url}/v2/models/llm/{endpoint}", json={"text_input": PROMPT},
                    headers=AUTH)
    assert store.list() == []
    assert sum(verifier.refusals.values()) == 1


def test_endpoint_that_hangs_up_after_the_evidence_is_refused(
    meter_at: MeterFactory, verifier: Verifier
) -> None:
    verifier.certificate_evidence = False
    meter, url = meter_at(close_after_attestation=True)
    with httpx2.Client(transport=VerifiedTransport(verifier)) as client, \
            pytest.raises(EvidenceUnavailable, match="ConnectionNotReusable"):
        _generate(client, url)
    assert meter.posts() == []


def test_plain_http_is_refused(verifier: Verifier) -> None:
    with httpx2.Client(transport=VerifiedTransport(verifier)) as client, \
            pytest.raises(PlaintextRefused):
        client.get("http://127.0.0.1:9/v2/health/live")


def test_receipts_sum_to_what_was_charged(
    meter_at: MeterFactory, verifier: Verifier, store: ReceiptStore
) -> None:
    meter, url = meter_at()
    with httpx2.Client(transport=VerifiedTransport(verifier, store=store)) as client:
        _generate(client, url)
        client.post(f"{url}/v2/models/add/infer", json={"inputs": []}, headers=AUTH)
        with client.stream("POST", f"{url}/v2/models/llm/generate_stream",
                           json={"text_input": PROMPT}, headers=AUTH) as stream:
            events = [line for line in stream.iter_lines() if line.startswith("data:")]
        assert len(events) == 4  # three tokens and the receipt
    report = store.verify()
    assert report.ok, report.problems
    assert report.checked == 3
    assert report.channel_cost("tenant/alpha") == meter.charged["tenant/alpha"]
    (meter_sum,) = report.channels["tenant/alpha"].values()
    assert meter_sum.charged_nanoton == meter.charged["tenant/alpha"]
    assert meter_sum.unaccounted_nanoton == 0


async def test_async_client(
    meter_at: MeterFactory, verifier: Verifier, store: ReceiptStore
) -> None:
    _, url = meter_at()
    async with httpx2.AsyncClient(transport=AsyncVerifiedTransport(verifier, store=store)) as c:
        response = await c.post(f"{url}/v2/models/llm/generate", json={"text_input": PROMPT},
                                headers=AUTH)
        assert response.json()["text_output"] == f"echo: {PROMPT}"
        async with c.stream("POST", f"{url}/v2/models/llm/generate_stream",
                            json={"text_input": PROMPT}, headers=AUTH) as stream:
            text = "".join([line async for line in stream.aiter_lines()])
        assert "cocoon.receipt" in text
    assert store.verify().ok
    assert len(store.list()) == 2


async def test_async_mitm_is_refused(
    meter_at: MeterFactory, verifier: Verifier, loop_thread: LoopThread, tmp_path: Path
) -> None:
    meter, url = meter_at()
    mitm = Mitm(int(url.rsplit(":", 1)[1]), _self_signed_context(tmp_path))
    loop_thread.run(mitm.start())
    try:
        async with httpx2.AsyncClient(transport=AsyncVerifiedTransport(verifier)) as c:
            with pytest.raises(KeyNotBound):
                await c.post(f"https://127.0.0.1:{mitm.port}/v2/models/llm/generate",
                             content=json.dumps({"text_input": PROMPT}), headers=AUTH)
    finally:
        loop_thread.run(mitm.stop())
    assert PROMPT.encode() not in bytes(mitm.from_client)
    assert meter.posts() == []


def _self_signed_context(tmp_path: Path) -> ssl.SSLContext:
    """A plain self-signed certificate with no evidence at all."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()))
    path = tmp_path / "mitm.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(path)
    return context


def test_openai_sdk_uses_the_verified_transport(
    meter_at: MeterFactory, verifier: Verifier, loop_thread: LoopThread, tmp_path: Path
) -> None:
    import openai

    meter, url = meter_at()
    http_client = httpx2.Client(transport=VerifiedTransport(verifier))
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=CREDENTIAL, http_client=http_client)
    assert [m.id for m in client.models.list()] == ["llm"]
    # and through a man in the middle the SDK gets the refusal, never an answer
    mitm = Mitm(int(url.rsplit(":", 1)[1]), _self_signed_context(tmp_path))
    loop_thread.run(mitm.start())
    try:
        evil = openai.OpenAI(base_url=f"https://127.0.0.1:{mitm.port}/v1", api_key=CREDENTIAL,
                             http_client=httpx2.Client(transport=VerifiedTransport(verifier)),
                             max_retries=0)
        with pytest.raises(KeyNotBound):  # raised as is, not retried or wrapped
            evil.models.list()
    finally:
        loop_thread.run(mitm.stop())
    assert CREDENTIAL.encode() not in bytes(mitm.from_client)
    assert [s.path for s in meter.seen].count("/v1/models") == 1


def test_a_kept_alive_connection_is_not_used_past_its_verdict(
    meter_at: MeterFactory, sim: SimulatedTee
) -> None:
    spec = sim.policy_spec(verdictLifetimeSeconds=61, reattestIntervalSeconds=30)
    verifier = Verifier(Policy.from_spec(spec), certificate_evidence=False)
    meter, url = meter_at()
    start = time.time()
    verifier.clock = lambda: start
    with httpx2.Client(transport=VerifiedTransport(verifier)) as client:
        _generate(client, url)
        verifier.clock = lambda: start + 62
        _generate(client, url)
    attested = [s.peer for s in meter.seen if s.path.startswith("/.well-known")]
    posts = [s.peer for s in meter.posts()]
    assert len(attested) == 2 and attested[0] != attested[1]  # attested again, on a new one
    assert posts == attested  # each request went over the connection just attested
