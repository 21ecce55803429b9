"""The agent's loop: notice a new challenge, collect evidence bound to it, submit, remember.

Each `step` is one poll and at most one submission, so tests drive the agent deterministically
with a fake clock and a fake challenge source; `run` only repeats steps between waits. Backoff is
per nonce: while a submission waits to be retried, a newer challenge is still answered at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cocoon import keys
from cocoon.agent.collectors import CollectorError
from cocoon.agent.sources import EvidenceSource
from cocoon.agent.submit import Outcome, Submission
from cocoon.api.attestednode import Challenge
from cocoon.attestation.evidence import NodeEvidence

log = logging.getLogger("cocoon.agent")

FetchChallenge = Callable[[], Awaitable[Challenge | None]]
Submit = Callable[[bytes, bytes, NodeEvidence], Awaitable[Submission]]
REMEMBERED_NONCES = 32


class FetchError(Exception):
    """The challenge could not be read (API unreachable, RBAC, malformed status)."""


@dataclass
class _Retry:
    nonce: str
    attempts: int
    at: float
    evidence: NodeEvidence | None


class Agent:
    def __init__(
        self,
        *,
        node: str,
        key: Ed25519PrivateKey,
        source: EvidenceSource,
        submit: Submit,
        fetch_challenge: FetchChallenge,
        poll_seconds: float = 2.0,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        self.public_key = keys.public_bytes(key)
        self._source = source
        self._submit = submit
        self._fetch = fetch_challenge
        self._poll = poll_seconds
        self._backoff = (backoff_initial, backoff_max)
        self._clock = clock
        self._answered: deque[str] = deque(maxlen=REMEMBERED_NONCES)
        self._retry: _Retry | None = None
        self._waiting: str | None = None
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self, *, once: bool = False) -> Outcome | None:
        """Poll until stopped; with `once`, until a challenge gets a verdict or is refused.

        A 409 under `once` keeps waiting: the operator has moved on to a newer challenge.
        """
        while not self._stop.is_set():
            outcome = await self.step()
            if once and outcome is not None and outcome.final and outcome is not Outcome.STALE:
                return outcome
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._pause())
        return None

    def _pause(self) -> float:
        if self._retry is None:
            return self._poll
        return max(0.0, min(self._poll, self._retry.at - self._clock()))

    async def step(self) -> Outcome | None:
        """One poll; the outcome of the submission it made, or None when there was nothing to do."""
        try:
            challenge = await self._fetch()
        except FetchError as exc:
            self._wait("ChallengeUnreadable", str(exc), logging.WARNING)
            return None
        if challenge is None:
            self._wait("NoChallenge", "no challenge in the AttestedNode status yet")
            return None
        nonce_hex = challenge.nonce
        if nonce_hex in self._answered:
            self._wait("Answered", "waiting for the next challenge")
            return None
        self._waiting = None
        if self._clock() >= challenge.expires_at.timestamp():
            self._answered.append(nonce_hex)
            self._log(
                logging.WARNING,
                "ChallengeExpired",
                nonce_hex,
                message="the challenge expired before it was answered; if this repeats, check "
                "the node's clock",
                expiresAt=challenge.expires_at.isoformat(),
            )
            return None
        retry = self._retry if self._retry is not None and self._retry.nonce == nonce_hex else None
        if retry is not None and self._clock() < retry.at:
            return None
        return await self._answer(bytes.fromhex(nonce_hex), retry)

    async def _answer(self, nonce: bytes, retry: _Retry | None) -> Outcome:
        attempts = retry.attempts + 1 if retry is not None else 1
        evidence = retry.evidence if retry is not None else None
        if evidence is None:
            try:
                evidence = await asyncio.to_thread(self._source, nonce, self.public_key)
            except CollectorError as exc:
                submission = Submission(Outcome.RETRY, None, "CollectionFailed", str(exc))
                return self._record(nonce, attempts, None, submission)
        submission = await self._submit(nonce, self.public_key, evidence)
        return self._record(nonce, attempts, evidence, submission)

    def _record(
        self, nonce: bytes, attempts: int, evidence: NodeEvidence | None, result: Submission
    ) -> Outcome:
        level = {
            Outcome.VERIFIED: logging.INFO,
            Outcome.STALE: logging.INFO,
            Outcome.REJECTED: logging.ERROR,
            Outcome.REFUSED: logging.ERROR,
        }.get(result.outcome, logging.WARNING)
        fields: dict[str, object] = {
            "outcome": str(result.outcome),
            "httpStatus": result.status,
            "reason": result.reason,
            "message": result.message,
            "attempt": attempts,
            "gpus": len(evidence.gpus) if evidence is not None else None,
        }
        if result.outcome.final:
            self._answered.append(nonce.hex())
            self._retry = None
        else:
            low, high = self._backoff
            delay = min(high, low * 2 ** (attempts - 1)) * random.uniform(0.5, 1.0)  # noqa: S311
            self._retry = _Retry(nonce.hex(), attempts, self._clock() + delay, evidence)
            fields["retryInSeconds"] = round(delay, 2)
        self._log(level, "EvidenceSubmitted", nonce.hex(), **fields)
        return result.outcome

    def _wait(self, state: str, message: str, level: int = logging.INFO) -> None:
        """Log a waiting state once when it begins, not on every poll."""
        if self._waiting != state + message:
            self._waiting = state + message
            log.log(level, state, extra={"fields": {"node": self.node, "message": message}})

    def _log(self, level: int, event: str, nonce_hex: str, **fields: object) -> None:
        base = {"node": self.node, "nonce": nonce_hex, "publicKey": self.public_key.hex()}
        log.log(level, event, extra={"fields": {**base, **fields}})
