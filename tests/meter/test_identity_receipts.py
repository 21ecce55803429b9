"""Meter identity (in-memory keys bound into endpoint evidence) and signed receipts."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta

import pytest

from cocoon.agent.simulated import SimulatedTee
from cocoon.attestation import endpoint
from cocoon.attestation.policy import Policy
from cocoon.meter import receipts
from cocoon.meter.identity import MeterIdentity, Placement

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def sim() -> SimulatedTee:
    return SimulatedTee.generate(now=NOW - timedelta(days=1))


@pytest.fixture(scope="module")
def policy(sim: SimulatedTee) -> Policy:
    return Policy.from_spec(sim.policy_spec())


def source(sim: SimulatedTee, **kw: object):  # type: ignore[no-untyped-def]
    kw.setdefault("gpus", 1)
    return lambda data: sim.bound_evidence(data, **kw)


def test_genuine_endpoint_evidence_verifies(sim: SimulatedTee, policy: Policy) -> None:
    ident = MeterIdentity.generate(Placement(pool="ns/chat", pod="p", node="n"))
    nonce = bytes(range(32))
    doc = ident.evidence(nonce, source(sim), now=NOW)
    verdict = endpoint.appraise(doc, policy, now=int(NOW.timestamp()), nonce=nonce,
                                tls_spki_sha256=ident.keys.tls_spki_sha256)
    assert verdict.verified, verdict.message


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("nonce", "ReplayedProof"),
        ("tls", "KeyNotBound"),
        ("receipt_key", "ReportDataMismatch"),
        ("old", "EvidenceTooOld"),
    ],
)
def test_evidence_attacks_fail_closed(
    sim: SimulatedTee, policy: Policy, change: str, reason: str
) -> None:
    ident = MeterIdentity.generate()
    other = MeterIdentity.generate()
    nonce = bytes(32)
    doc = ident.evidence(nonce, source(sim), now=NOW)
    now = int(NOW.timestamp())
    spki = ident.keys.tls_spki_sha256
    asked = nonce
    if change == "nonce":
        asked = b"\x01" * 32  # the caller asked another nonce: this proof is a replay
    elif change == "tls":
        spki = other.keys.tls_spki_sha256  # the connection presents a MITM's key
    elif change == "receipt_key":
        doc = doc.model_copy(update={"receipt_public_key": other.keys.receipt_public_key.hex()})
    elif change == "old":
        now += policy.max_evidence_age + 1
    verdict = endpoint.appraise(doc, policy, now=now, nonce=asked, tls_spki_sha256=spki)
    assert not verdict.verified
    assert reason in {f.reason for f in verdict.failures}, verdict.message


def test_certificate_carries_bound_evidence(sim: SimulatedTee, policy: Policy) -> None:
    ident = MeterIdentity.generate()
    cert = ident.issue_certificate(source(sim), now=NOW)
    doc = endpoint.evidence_in_certificate(cert)
    assert doc is not None
    issued = int(doc.issued_at.timestamp())
    verdict = endpoint.appraise(
        doc, policy, now=issued, nonce=endpoint.certificate_nonce(issued),
        tls_spki_sha256=endpoint.spki_sha256(cert),
    )
    assert verdict.verified, verdict.message
    context = ident.server_context()
    assert context.minimum_version is ssl.TLSVersion.TLSv1_3


def _receipt(ident: MeterIdentity) -> receipts.Receipt:
    return receipts.Receipt(
        format=receipts.FORMAT, request_id="ab" * 16, meter_public_key=ident.receipt_public_hex,
        pool="ns/chat",
        channel="ns/main", model="llm", endpoint="generate", outcome="ok",
        request_sha256=receipts.digest(b"req"), response_sha256=receipts.digest(b"resp"),
        units={"requests": 1, "output_tokens": 8}, price={"per_request": "100"},
        cost_nanoton="900", cumulative_nanoton="900", issued_at=int(NOW.timestamp()),
    )


def test_receipt_roundtrip_and_one_bit_flip() -> None:
    ident = MeterIdentity.generate()
    signed = receipts.sign(_receipt(ident), ident.receipt_key)
    header = receipts.encode_header(signed)
    assert receipts.verify(receipts.decode_header(header)).cost_nanoton == "900"
    flipped = signed.model_copy(
        update={"receipt": signed.receipt.model_copy(update={"cost_nanoton": "901"})}
    )
    with pytest.raises(receipts.ReceiptError, match="does not verify"):
        receipts.verify(flipped)
    with pytest.raises(receipts.ReceiptError, match="other than"):
        receipts.verify(signed, trusted_public_key=bytes(32))


def test_one_gpu_sent_twice_does_not_pass_for_two(sim: SimulatedTee) -> None:
    """A meter's evidence is held to distinct GPUs, as a node's is."""
    policy = Policy.from_spec(sim.policy_spec(gpu={"required": True, "minCount": 2}))
    ident = MeterIdentity.generate()
    nonce = bytes(32)

    def twice(data: bytes):  # type: ignore[no-untyped-def]
        one = sim.bound_evidence(data, gpus=1)
        return type(one)(one.cpu, one.gpus * 2)

    doc = ident.evidence(nonce, twice, now=NOW)
    verdict = endpoint.appraise(doc, policy, now=int(NOW.timestamp()), nonce=nonce,
                                tls_spki_sha256=ident.keys.tls_spki_sha256)
    assert verdict.reason == "DuplicateGpu", verdict.message
    honest = ident.evidence(nonce, source(sim, gpus=2), now=NOW)
    assert endpoint.appraise(honest, policy, now=int(NOW.timestamp()), nonce=nonce,
                             tls_spki_sha256=ident.keys.tls_spki_sha256).verified
