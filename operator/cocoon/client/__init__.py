"""The caller's side of Cocoon: verify the endpoint yourself, then send; keep signed receipts.

`Verifier` holds the caller's own policy (`policy.load`) and the keys it pinned;
`VerifiedTransport` / `AsyncVerifiedTransport` plug into any httpx client (and so into
`openai.OpenAI(http_client=...)`); `ReceiptStore` keeps what every response was charged.
"""

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
from cocoon.client.transport import AsyncVerifiedTransport, VerifiedTransport
from cocoon.client.verify import PinnedEndpoint, Verifier

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
