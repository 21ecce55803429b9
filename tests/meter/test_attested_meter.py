"""The meter as callers meet it: TLS 1.3 with an in-memory key that its evidence binds, fresh
evidence for the caller's nonce, and a signed receipt on every metered response.

The real meter process (simulated TEE) in front of real Triton.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from conftest import AUTH, CHANNEL, CREDENTIAL, PRICE

from cocoon.agent.simulated import SimulatedTee
from cocoon.attestation import endpoint
from cocoon.attestation.endpoint import EndpointEvidence
from cocoon.attestation.policy import Policy
from cocoon.devstack import triton
from cocoon.meter import receipts
from cocoon.meter.journal import read_charges
from cocoon.meter.process import MeterProcess, start_meter, write_credits

pytestmark = pytest.mark.triton

ADD_BODY = {"inputs": [
    {"name": "INPUT0", "shape": [16], "datatype": "FP32", "data": [1.0] * 16},
    {"name": "INPUT1", "shape": [16], "datatype": "FP32", "data": [2.0] * 16},
]}


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("sim")
    from datetime import UTC, datetime

    SimulatedTee.generate(now=datetime.now(UTC)).save(directory)
    return directory


@pytest.fixture
def attested(
    triton_server: triton.TritonServer, tmp_path: Path, sim_dir: Path
) -> Iterator[MeterProcess]:
    write_credits(tmp_path / "credits.json", {CREDENTIAL: (CHANNEL, 10**15)})
    process = start_meter(triton_server, tmp_path, price=PRICE, simulated_tee=sim_dir,
                          extra_args=("--reserve-output-tokens=16",))
    yield process
    process.stop()


def _unverified() -> ssl.SSLContext:
    """Only to reach the endpoint: the test then verifies it as a caller would."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _get(port: int, path: str, context: ssl.SSLContext) -> tuple[int, bytes, bytes]:
    """One HTTP/1.1 GET over TLS; also returns the certificate this connection presented."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw, \
            context.wrap_socket(raw) as tls:
        certificate = tls.getpeercert(binary_form=True)
        assert certificate is not None
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: meter\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body, certificate


def test_only_tls13_and_no_plain_http(attested: MeterProcess) -> None:
    old = _unverified()
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError), socket.create_connection(
        ("127.0.0.1", attested.http_port), timeout=10
    ) as raw, old.wrap_socket(raw):
        pass
    with socket.create_connection(("127.0.0.1", attested.http_port), timeout=10) as raw:
        raw.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
        assert not raw.recv(100).startswith(b"HTTP/1.1 200")


def test_fresh_evidence_binds_the_key_of_this_connection(
    attested: MeterProcess, sim_dir: Path
) -> None:
    policy = Policy.from_spec(SimulatedTee.load(sim_dir).policy_spec())
    nonce = os.urandom(32)
    status, body, certificate = _get(
        attested.http_port, f"/.well-known/cocoon/attestation?nonce={nonce.hex()}", _unverified()
    )
    assert status == 200
    document = EndpointEvidence.model_validate_json(body)
    spki = endpoint.spki_sha256(certificate)
    verdict = endpoint.appraise(document, policy, now=int(time.time()), nonce=nonce,
                                tls_spki_sha256=spki)
    assert verdict.verified, verdict.message
    # the RA-TLS certificate proves the same key without a round trip
    from cryptography import x509

    embedded = endpoint.evidence_in_certificate(x509.load_der_x509_certificate(certificate))
    assert embedded is not None
    assert embedded.receipt_public_key == document.receipt_public_key
    issued = int(embedded.issued_at.timestamp())
    assert endpoint.appraise(embedded, policy, now=int(time.time()),
                             nonce=endpoint.certificate_nonce(issued),
                             tls_spki_sha256=spki).verified
    # an answer for another nonce is not a proof for ours (replay)
    other = endpoint.appraise(document, policy, now=int(time.time()), nonce=os.urandom(32),
                              tls_spki_sha256=spki)
    assert other.reason == "ReplayedProof"


@pytest.mark.parametrize("nonce", ["", "zz", "00" * 31, "00" * 33])
def test_a_bad_nonce_is_a_json_400(attested: MeterProcess, nonce: str) -> None:
    status, body, _ = _get(
        attested.http_port, f"/.well-known/cocoon/attestation?nonce={nonce}", _unverified()
    )
    assert status == 400
    assert json.loads(body)["error"]["reason"] == "BadNonce"


async def _receipt_key(meter: MeterProcess) -> bytes:
    status, body, _ = await asyncio.to_thread(
        _get, meter.http_port, f"/.well-known/cocoon/attestation?nonce={'00' * 32}", _unverified()
    )
    assert status == 200
    return bytes.fromhex(EndpointEvidence.model_validate_json(body).receipt_public_key)


async def test_every_response_carries_a_receipt_that_sums_to_the_journal(
    attested: MeterProcess,
) -> None:
    key = await _receipt_key(attested)
    held: list[receipts.Receipt] = []
    body = json.dumps(ADD_BODY).encode()
    connector = aiohttp.TCPConnector(ssl=_unverified())
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(3):
            async with session.post(f"{attested.http_url}/v2/models/add/infer", data=body,
                                    headers={**AUTH, "Content-Type": "application/json"}) as r:
                assert r.status == 200
                answer = await r.read()
                receipt = receipts.verify(receipts.decode_header(r.headers[receipts.HEADER]),
                                          trusted_public_key=key)
            assert receipt.request_sha256 == receipts.digest(body)
            assert receipt.response_sha256 == receipts.digest(answer)
            assert receipt.cost_nanoton == r.headers["Cocoon-Cost-Nanoton"]
            assert receipt.price["per_request"] == PRICE.per_request
            held.append(receipt)
        stream_body = json.dumps({"text_input": "hello", "max_tokens": 4}).encode()
        async with session.post(f"{attested.http_url}/v2/models/tokens/generate_stream",
                                data=stream_body, headers=AUTH) as r:
            text = (await r.read()).decode()
    events = [e for e in text.split("\n\n") if e.startswith(f"event: {receipts.SSE_EVENT}")]
    assert len(events) == 1
    signed = receipts.SignedReceipt.model_validate_json(events[0].split("data: ", 1)[1])
    held.append(receipts.verify(signed, trusted_public_key=key))
    delivered = text.split(f"event: {receipts.SSE_EVENT}")[0].encode()  # usage event included
    assert held[-1].response_sha256 == receipts.digest(delivered)
    assert held[-1].request_sha256 == receipts.digest(stream_body)
    total = sum(int(r.cost_nanoton) for r in held)
    assert int(held[-1].cumulative_nanoton) == total
    journaled = sum(c.cost_nanoton for c in read_charges(attested.journal) if c.channel == CHANNEL)
    assert journaled == total
    assert len({r.request_id for r in held}) == len(held)


async def test_a_receipt_with_one_bit_changed_is_refused(attested: MeterProcess) -> None:
    key = await _receipt_key(attested)
    connector = aiohttp.TCPConnector(ssl=_unverified())
    async with aiohttp.ClientSession(connector=connector) as session, session.post(
        f"{attested.http_url}/v2/models/add/infer", json=ADD_BODY, headers=AUTH
    ) as r:
        header = r.headers[receipts.HEADER]
    raw = bytearray(json.dumps(receipts.decode_header(header).model_dump(by_alias=True)).encode())
    flips = 0
    for index in range(0, len(raw), 7):
        mutated = bytearray(raw)
        mutated[index] ^= 0x01
        try:
            signed = receipts.SignedReceipt.model_validate_json(bytes(mutated))
        except ValueError:
            continue  # no longer a receipt at all: refused by parsing
        with pytest.raises(receipts.ReceiptError):
            receipts.verify(signed, trusted_public_key=key)
        flips += 1
    assert flips > 20


def test_grpc_serves_tls_with_the_attested_key_and_receipts_in_trailers(
    attested: MeterProcess,
) -> None:
    import grpc
    import numpy as np
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    _, body, certificate = _get(
        attested.http_port, f"/.well-known/cocoon/attestation?nonce={'11' * 32}", _unverified()
    )
    key = bytes.fromhex(EndpointEvidence.model_validate_json(body).receipt_public_key)
    pem = x509.load_der_x509_certificate(certificate).public_bytes(serialization.Encoding.PEM)
    credentials = grpc.ssl_channel_credentials(root_certificates=pem)
    options = (("grpc.ssl_target_name_override", "cocoon-meter"),)
    request = pb.ModelInferRequest(model_name="add")
    for name in ("INPUT0", "INPUT1"):
        request.inputs.add(name=name, datatype="FP32", shape=[16])
        request.raw_input_contents.append(np.ones(16, np.float32).tobytes())
    with grpc.secure_channel(attested.grpc_target, credentials, options) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        _, call = stub.ModelInfer.with_call(
            request, metadata=(("authorization", f"Bearer {CREDENTIAL}"),), timeout=30
        )
    trailers = dict(call.trailing_metadata())
    receipt = receipts.verify(receipts.decode_header(trailers[receipts.GRPC_TRAILER]),
                              trusted_public_key=key)
    assert receipt.request_sha256 == receipts.digest(request.SerializeToString())
    # the same port refuses a plaintext client
    with grpc.insecure_channel(attested.grpc_target) as plain, pytest.raises(grpc.RpcError):
        pb_grpc.GRPCInferenceServiceStub(plain).ServerLive(pb.ServerLiveRequest(), timeout=5)
