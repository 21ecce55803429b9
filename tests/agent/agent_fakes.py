"""Stand-ins for the agent's two counterparts: the AttestedNode status and the operator endpoint.

The fake operator appraises what it receives with the real library and the simulated TEE's
policy, so a test passes only if the agent's evidence really verifies.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from aiohttp import web

from cocoon.agent.simulated import DEFAULT_MEASUREMENT, SimulatedTee
from cocoon.api.attestednode import Challenge
from cocoon.attestation import appraisal
from cocoon.attestation.evidence import NodeEvidence
from cocoon.attestation.policy import Policy
from cocoon.attestation.verdict import Rejected

SIM = SimulatedTee.generate(now=datetime.now(UTC))
POLICY = Policy.from_spec(SIM.policy_spec(snp={"measurements": [DEFAULT_MEASUREMENT.hex()]}))


def challenge(*, expires_in: float = 300, nonce: bytes | None = None) -> Challenge:
    now = datetime.now(UTC)
    return Challenge(
        nonce=(nonce or os.urandom(32)).hex(),
        issued_at=now,
        expires_at=now + timedelta(seconds=expires_in),
    )


class FakeNode:
    """The AttestedNode's status.challenge, as the operator would set it."""

    def __init__(self, current: Challenge | None = None) -> None:
        self.current = current
        self.polls = 0
        self.error: Exception | None = None
        self._polled = asyncio.Condition()

    async def __call__(self) -> Challenge | None:
        async with self._polled:
            self.polls += 1
            self._polled.notify_all()
        if self.error is not None:
            raise self.error
        return self.current

    async def wait_polls(self, count: int) -> None:
        async with self._polled:
            await self._polled.wait_for(lambda: self.polls >= count)


@dataclass
class Received:
    token: str
    body: dict[str, object]


Responder = Callable[["FakeOperator", Received], web.Response | None]


@dataclass
class FakeOperator:
    """POST /attestation/v1/nodes/{node}/evidence: record, then answer like the operator."""

    node: FakeNode
    name: str = "node-a"
    received: list[Received] = field(default_factory=list)
    responders: list[Responder] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/attestation/v1/nodes/{node}/evidence", self._evidence)
        return app

    async def _evidence(self, request: web.Request) -> web.Response:
        if request.match_info["node"] != self.name:
            return _error(403, "WrongNode", "token not for this node")
        got = Received(request.headers.get("Authorization", ""), await request.json())
        self.received.append(got)
        if self.responders:
            answer = self.responders.pop(0)(self, got)
            if answer is not None:
                return answer
        return self.appraise(got)

    def appraise(self, got: Received) -> web.Response:
        current = self.node.current
        if current is None or got.body["nonce"] != current.nonce:
            return _error(409, "NonceNotCurrent", "answer the current challenge")
        try:
            evidence = NodeEvidence.from_dict(got.body["evidence"])
        except Rejected as exc:
            return _error(400, exc.failure.reason, exc.failure.message)
        verdict = appraisal.appraise_node(
            evidence,
            POLICY,
            now=int(datetime.now(UTC).timestamp()),
            nonce=bytes.fromhex(current.nonce),
            public_key=bytes.fromhex(str(got.body["publicKey"])),
        )
        return web.json_response(
            {"verified": verdict.verified, "reason": verdict.reason, "message": verdict.message}
        )


def reply(status: int, reason: str = "Test", *, rotate: bool = False) -> Responder:
    """A canned answer for the next submission; `rotate` issues a new challenge first."""

    def respond(operator: FakeOperator, got: Received) -> web.Response:
        if rotate:
            operator.node.current = challenge()
        return _error(status, reason, f"canned {status}")

    return respond


def _error(status: int, reason: str, message: str) -> web.Response:
    return web.json_response({"error": {"reason": reason, "message": message}}, status=status)


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
