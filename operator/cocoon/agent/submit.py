"""POST evidence to the operator's endpoint and classify the answer.

The operator, not the Kubernetes API, receives evidence: blobs stay out of etcd and the agent
holds no permission to write a verdict. The token is read from its file on every submission
because kubelet rotates projected ServiceAccount tokens.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import quote

import aiohttp

from cocoon.attestation.evidence import NodeEvidence

TIMEOUT = aiohttp.ClientTimeout(total=60)


class Outcome(StrEnum):
    VERIFIED = "Verified"  # 200, verified: the node is attested
    REJECTED = "Rejected"  # 200, not verified: the operator appraised and refused the evidence
    STALE = "Stale"  # 409: the nonce is not current, expired or used; wait for the next one
    REFUSED = "Refused"  # 400/403: resubmitting the same thing cannot help
    RETRY = "Retry"  # 401 (token may rotate), 5xx, connection errors: back off and retry

    @property
    def final(self) -> bool:
        """Whether this challenge has been answered for good."""
        return self is not Outcome.RETRY


@dataclass(frozen=True)
class Submission:
    outcome: Outcome
    status: int | None
    reason: str | None
    message: str


def body(nonce: bytes, public_key: bytes, evidence: NodeEvidence) -> dict[str, object]:
    """The wire form the operator expects."""
    return {"nonce": nonce.hex(), "publicKey": public_key.hex(), "evidence": evidence.to_dict()}


def classify(status: int, payload: object) -> Submission:
    """Map an HTTP answer (JSON payload, or None when it was not JSON) to an outcome."""
    data: dict[str, object] = payload if isinstance(payload, dict) else {}
    nested = data.get("error")
    error = nested if isinstance(nested, dict) else data
    reason = error.get("reason")
    reason = str(reason) if reason is not None else None
    message = str(error.get("message") or f"HTTP {status}")
    if status == 200:
        verified = data.get("verified") is True
        return Submission(
            Outcome.VERIFIED if verified else Outcome.REJECTED, status, reason, message
        )
    if status == 409:
        return Submission(Outcome.STALE, status, reason, message)
    if status in (400, 403):
        return Submission(Outcome.REFUSED, status, reason, message)
    return Submission(Outcome.RETRY, status, reason, message)


class Submitter:
    """One node's client of `POST /attestation/v1/nodes/{node}/evidence`."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        operator_url: str,
        node: str,
        token_file: Path,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._session = session
        self.url = (
            f"{operator_url.rstrip('/')}/attestation/v1/nodes/{quote(node, safe='')}/evidence"
        )
        self._token_file = token_file
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True

    async def submit(self, nonce: bytes, public_key: bytes, evidence: NodeEvidence) -> Submission:
        try:
            token = self._token_file.read_text().strip()
        except OSError as exc:
            return Submission(Outcome.RETRY, None, "TokenUnreadable", f"{self._token_file}: {exc}")
        try:
            async with self._session.post(
                self.url,
                json=body(nonce, public_key, evidence),
                headers={"Authorization": f"Bearer {token}"},
                timeout=TIMEOUT,
                ssl=self._ssl,
            ) as response:
                try:
                    payload = await response.json(content_type=None)
                except ValueError:
                    payload = None
                return classify(response.status, payload)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Submission(
                Outcome.RETRY, None, "Unreachable", f"{self.url}: {type(exc).__name__}: {exc}"
            )
