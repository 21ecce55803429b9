"""The verifier's pins and the stream's last guard, without a server in between."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import serialization

from cocoon.agent.simulated import SimulatedTee
from cocoon.client import EvidenceUnavailable, Verifier
from cocoon.client.network import VerifyingBackend
from cocoon.meter.identity import MeterIdentity


def test_a_pin_lapses_with_its_verdict(sim: SimulatedTee, verifier: Verifier) -> None:
    ident = MeterIdentity.generate()
    cert = ident.issue_certificate(lambda d: sim.bound_evidence(d, gpus=1))
    der = cert.public_bytes(serialization.Encoding.DER)
    now = datetime.now(UTC).timestamp()
    verifier.clock = lambda: now
    nonce = bytes(range(32))
    pin = verifier.from_document("h:1", der, ident.evidence(nonce, lambda d: sim.bound_evidence(
        d, gpus=1)), nonce)
    assert verifier.pinned("h:1", der) == pin
    assert verifier.pinned("other:1", der) is None  # pins are per origin
    verifier.clock = lambda: pin.expires_at
    assert verifier.pinned("h:1", der) is None


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.create_server(("127.0.0.1", 0))
    yield sock
    sock.close()


def test_nothing_is_written_before_verification(verifier: Verifier,
                                                listener: socket.socket) -> None:
    stream = VerifyingBackend(verifier).connect_tcp("127.0.0.1", listener.getsockname()[1])
    try:
        with pytest.raises(EvidenceUnavailable, match="unverified"):
            stream.write(b"POST / HTTP/1.1\r\n\r\nprompt")
    finally:
        stream.close()
