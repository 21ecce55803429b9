"""The caller's side of Cocoon: verify the endpoint yourself, then send; keep signed receipts.

`Verifier` holds the caller's own policy (`policy.load`) and the keys it pinned;
`VerifiedTransport` / `AsyncVerifiedTransport` plug into any httpx client (and so into
`openai.OpenAI(http_client=...)`); `ReceiptStore` keeps what every response was charged.
"""

from typing import TYPE_CHECKING

from cocoon.client.errors import (
    EndpointRefused,
    EvidenceTooOld,
    EvidenceUnavailable,
    KeyNotBound,
    MeasurementNotInPolicy,
    NonceMismatch,
    PlaintextRefused,
    ReceiptRefused,
    Refused,
)
from cocoon.client.store import ReceiptStore
from cocoon.client.verify import PinnedEndpoint, Verifier

if TYPE_CHECKING:
    from cocoon.client.transport import AsyncVerifiedTransport, VerifiedTransport


def __getattr__(name: str) -> object:
    """The transports import httpx on first use, so every `cocoon` command (the CLI registers
    `call` and `client`) does not pay for it at start."""
    if name in {"VerifiedTransport", "AsyncVerifiedTransport"}:
        from cocoon.client import transport

        return getattr(transport, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "AsyncVerifiedTransport",
    "EndpointRefused",
    "EvidenceTooOld",
    "EvidenceUnavailable",
    "KeyNotBound",
    "MeasurementNotInPolicy",
    "NonceMismatch",
    "PinnedEndpoint",
    "PlaintextRefused",
    "ReceiptRefused",
    "ReceiptStore",
    "Refused",
    "VerifiedTransport",
    "Verifier",
]
