"""The agent's meter socket: evidence for the meter's chosen report_data, never a key."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from cocoon.agent import meter_socket, sources
from cocoon.agent.simulated import SimulatedTee
from cocoon.attestation import endpoint
from cocoon.attestation.policy import Policy
from cocoon.meter import evidence_source
from cocoon.meter.identity import MeterIdentity

SIM = SimulatedTee.generate(now=datetime.now(UTC))


@pytest.fixture
async def socket_path(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "meter" / "agent.sock"
    runner = await meter_socket.serve(sources.simulated(SIM, gpus=2), path)
    yield path
    await runner.cleanup()


async def test_meter_gets_evidence_bound_to_its_own_keys(socket_path: Path) -> None:
    assert oct(os.stat(socket_path).st_mode & 0o777) == "0o600"
    ident = MeterIdentity.generate()
    nonce = os.urandom(32)
    bound = await evidence_source.agent_socket(socket_path)(endpoint.report_data(nonce, ident.keys))
    document = ident.document(nonce, bound)
    policy = Policy.from_spec(SIM.policy_spec())
    verdict = endpoint.appraise(document, policy, now=int(datetime.now(UTC).timestamp()),
                                nonce=nonce, tls_spki_sha256=ident.keys.tls_spki_sha256)
    assert verdict.verified, verdict.message
    assert [d.name for d in verdict.devices] == ["cpu0", "gpu0", "gpu1"]
    # evidence the socket made for one meter's keys proves nothing for another meter's
    other = MeterIdentity.generate()
    stolen = other.document(nonce, bound)
    assert not endpoint.appraise(stolen, policy, now=int(datetime.now(UTC).timestamp()),
                                 nonce=nonce, tls_spki_sha256=other.keys.tls_spki_sha256).verified


@pytest.mark.parametrize(
    "body", [b"", b"{}", b'{"reportData": "zz"}', b'{"reportData": "00"}', b"[1]", b"x" * 2048]
)
async def test_malformed_requests_are_refused(socket_path: Path, body: bytes) -> None:
    connector = aiohttp.UnixConnector(path=str(socket_path))
    async with aiohttp.ClientSession(connector=connector) as session, session.post(
        f"http://agent{meter_socket.EVIDENCE_PATH}", data=body
    ) as response:
        assert response.status in (400, 413)
        if response.status == 400:
            assert (await response.json())["error"]["reason"] == "BadRequest"


def test_the_bucket_bounds_evidence_requests() -> None:
    now = [0.0]
    bucket = meter_socket.TokenBucket(rate=2.0, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] += 0.5
    assert bucket.take() and not bucket.take()


async def test_an_absent_agent_is_a_clear_error(tmp_path: Path) -> None:
    source = evidence_source.agent_socket(tmp_path / "missing.sock")
    with pytest.raises(evidence_source.EvidenceUnavailable, match="agent running"):
        await source(bytes(64))
