"""The agent loop against an in-process operator endpoint and a fake AttestedNode."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from agent_fakes import SIM, FakeClock, FakeNode, FakeOperator, challenge, reply
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cocoon import keys
from cocoon.agent import sources
from cocoon.agent.loop import Agent, FetchError
from cocoon.agent.submit import Outcome, Submission, Submitter
from cocoon.attestation import binding, nvgpu
from cocoon.attestation.evidence import NodeEvidence
from cocoon.logs import JsonFormatter

NODE = "node-a"


@dataclass
class Rig:
    node: FakeNode
    operator: FakeOperator
    agent: Agent
    key: Ed25519PrivateKey
    token_file: Path
    clock: FakeClock


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    node = FakeNode(challenge())
    operator = FakeOperator(node, NODE)
    server = TestServer(operator.app())
    await server.start_server()
    token_file = tmp_path / "token"
    token_file.write_text("token-1\n")
    key = keys.load_or_create(tmp_path / "workload.pem")
    clock = FakeClock(time.time())
    async with aiohttp.ClientSession() as session:
        submitter = Submitter(session, str(server.make_url("/")), NODE, token_file)
        agent = Agent(
            node=NODE,
            key=key,
            source=sources.for_node(sources.simulated(SIM.for_node(NODE), gpus=2)),
            submit=submitter.submit,
            fetch_challenge=node,
            poll_seconds=0.01,
            backoff_initial=5,
            backoff_max=10,
            clock=clock,
        )
        yield Rig(node, operator, agent, key, token_file, clock)
    await server.close()


async def test_submits_evidence_bound_to_nonce_and_key(rig: Rig) -> None:
    assert await rig.agent.step() is Outcome.VERIFIED
    [got] = rig.operator.received
    assert got.token == "Bearer token-1"
    assert set(got.body) == {"nonce", "publicKey", "evidence"}
    assert rig.node.current is not None
    nonce = bytes.fromhex(rig.node.current.nonce)
    public = keys.public_bytes(rig.key)
    assert got.body["nonce"] == nonce.hex()
    assert got.body["publicKey"] == public.hex()
    evidence = got.body["evidence"]
    assert isinstance(evidence, dict)
    snp_report = base64.b64decode(evidence["cpu"]["report"])
    assert snp_report[0x50:0x90] == keys.report_data(nonce, public)
    assert len(evidence["gpus"]) == 2
    for gpu in evidence["gpus"]:
        request = base64.b64decode(gpu["report"])[: nvgpu.REQUEST_SIZE]
        assert binding.gpu_nonce(nonce, public) in request


async def test_same_nonce_is_not_resubmitted_and_new_nonce_is(rig: Rig) -> None:
    assert await rig.agent.step() is Outcome.VERIFIED
    assert await rig.agent.step() is None
    assert await rig.agent.step() is None
    assert len(rig.operator.received) == 1
    rig.node.current = challenge()
    assert await rig.agent.step() is Outcome.VERIFIED
    nonces = [r.body["nonce"] for r in rig.operator.received]
    assert len(nonces) == 2
    assert nonces[1] == rig.node.current.nonce != nonces[0]


async def test_conflict_waits_for_the_next_challenge(rig: Rig) -> None:
    rig.operator.responders.append(reply(409, "NonceAlreadyUsed"))
    assert await rig.agent.step() is Outcome.STALE
    assert await rig.agent.step() is None
    assert len(rig.operator.received) == 1
    rig.node.current = challenge()
    assert await rig.agent.step() is Outcome.VERIFIED


async def test_token_is_read_on_every_submission(rig: Rig) -> None:
    await rig.agent.step()
    rig.token_file.write_text("token-2")
    rig.node.current = challenge()
    await rig.agent.step()
    assert [r.token for r in rig.operator.received] == ["Bearer token-1", "Bearer token-2"]


@pytest.mark.parametrize("status", [503, 500, 401])
async def test_retryable_answers_back_off_then_retry(rig: Rig, status: int) -> None:
    rig.operator.responders.append(reply(status))
    assert await rig.agent.step() is Outcome.RETRY
    assert await rig.agent.step() is None  # still inside the backoff window
    assert len(rig.operator.received) == 1
    rig.clock.now += 10
    assert await rig.agent.step() is Outcome.VERIFIED
    first, second = rig.operator.received
    assert first.body == second.body


async def test_new_challenge_is_answered_during_backoff(rig: Rig) -> None:
    rig.operator.responders.append(reply(503))
    assert await rig.agent.step() is Outcome.RETRY
    rig.node.current = challenge()
    assert await rig.agent.step() is Outcome.VERIFIED


@pytest.mark.parametrize("status", [400, 403])
async def test_refusals_are_not_retried(rig: Rig, status: int) -> None:
    rig.operator.responders.append(reply(status))
    assert await rig.agent.step() is Outcome.REFUSED
    rig.clock.now += 100
    assert await rig.agent.step() is None
    assert len(rig.operator.received) == 1


async def test_unreachable_operator_is_retried(tmp_path: Path) -> None:
    node = FakeNode(challenge())
    server = TestServer(FakeOperator(node).app())
    await server.start_server()
    url = str(server.make_url("/"))
    await server.close()
    token = tmp_path / "t"
    token.write_text("x")
    async with aiohttp.ClientSession() as session:
        agent = Agent(
            node=NODE,
            key=keys.generate(),
            source=sources.for_node(sources.simulated(SIM)),
            submit=Submitter(session, url, NODE, token).submit,
            fetch_challenge=node,
        )
        assert await agent.step() is Outcome.RETRY


async def test_expired_challenge_is_skipped(rig: Rig) -> None:
    rig.node.current = challenge(expires_in=-1)
    assert await rig.agent.step() is None
    assert rig.operator.received == []


async def test_fetch_errors_are_survived(rig: Rig) -> None:
    rig.node.error = FetchError("API server unreachable")
    assert await rig.agent.step() is None
    rig.node.error = None
    assert await rig.agent.step() is Outcome.VERIFIED


@pytest.mark.parametrize(
    ("knobs", "reason"),
    [
        ({"debug": True}, "DebugEnabled"),
        ({"tamper": True}, "BadSignature"),
        ({"measurement": bytes(48)}, "MeasurementMismatch"),
    ],
)
async def test_bad_evidence_is_rejected_by_the_operator(
    tmp_path: Path, knobs: dict[str, object], reason: str
) -> None:
    node = FakeNode(challenge())
    operator = FakeOperator(node, NODE)
    server = TestServer(operator.app())
    await server.start_server()
    token = tmp_path / "t"
    token.write_text("x")
    answers: list[Submission] = []
    async with aiohttp.ClientSession() as session:
        submitter = Submitter(session, str(server.make_url("/")), NODE, token)

        async def submit(nonce: bytes, public_key: bytes, evidence: NodeEvidence) -> Submission:
            answers.append(await submitter.submit(nonce, public_key, evidence))
            return answers[-1]

        agent = Agent(
            node=NODE,
            key=keys.generate(),
            source=sources.for_node(sources.simulated(SIM, **knobs)),  # type: ignore[arg-type]
            submit=submit,
            fetch_challenge=node,
        )
        assert await agent.step() is Outcome.REJECTED
    await server.close()
    assert answers[0].reason == reason


async def test_run_once_waits_through_a_conflict_for_a_verdict(rig: Rig) -> None:
    rig.node.current = None
    rig.operator.responders.append(reply(409, rotate=True))
    task = asyncio.create_task(rig.agent.run(once=True))
    await rig.node.wait_polls(2)
    assert rig.operator.received == []
    rig.node.current = challenge()
    assert await asyncio.wait_for(task, 10) is Outcome.VERIFIED
    first, second = (r.body["nonce"] for r in rig.operator.received)
    assert first != second == rig.node.current.nonce


async def test_run_stops_when_asked(rig: Rig) -> None:
    rig.node.current = None
    task = asyncio.create_task(rig.agent.run())
    await rig.node.wait_polls(2)
    rig.agent.stop()
    assert await asyncio.wait_for(task, 10) is None


async def test_logs_are_json_and_never_hold_the_private_key(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="cocoon.agent")
    rig.operator.responders.append(reply(503))
    await rig.agent.step()
    rig.clock.now += 10
    await rig.agent.step()
    lines = [JsonFormatter().format(r) for r in caplog.records]
    entries = [json.loads(line) for line in lines]
    assert [e["outcome"] for e in entries] == ["Retry", "Verified"]
    assert entries[1]["publicKey"] == keys.public_bytes(rig.key).hex()
    private = rig.key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    assert not any(private.hex() in line or "PRIVATE KEY" in line for line in lines)
