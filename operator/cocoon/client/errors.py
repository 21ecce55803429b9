"""Why the client refused an endpoint or a receipt: one exception class per reason.

Every refusal happens before a request byte is sent (endpoints) or before the caller sees the
answer as accounted for (receipts). `reason` is the verifier's CamelCase reason, `message` says
what is wrong and what to do.
"""

from __future__ import annotations

from cocoon.attestation.verdict import Failure, Verdict


class Refused(Exception):
    """Base of every refusal; never retried silently."""

    def __init__(self, reason: str, message: str, *, endpoint: str = "",
                 failures: tuple[Failure, ...] = ()) -> None:
        where = f"{endpoint}: " if endpoint else ""
        super().__init__(f"{where}{reason}: {message}")
        self.reason = reason
        self.message = message
        self.endpoint = endpoint
        self.failures = failures or (Failure(reason, message),)


class EndpointRefused(Refused):
    """The endpoint did not prove it is an attested TEE that holds this connection's key."""


class NonceMismatch(EndpointRefused):
    """The evidence answers another nonce: a replayed or stale proof."""


class KeyNotBound(EndpointRefused):
    """The evidence binds a TLS key other than this connection's: a man in the middle."""


class EvidenceTooOld(EndpointRefused):
    """The evidence was issued longer ago than the client policy's maximum evidence age."""


class MeasurementNotInPolicy(EndpointRefused):
    """A measured value (launch measurement, MRTD, RTMR...) is not a reference value of yours."""


class EvidenceUnavailable(EndpointRefused):
    """The endpoint served no usable evidence (no route, an error, malformed JSON)."""


class PlaintextRefused(EndpointRefused):
    """The URL is not https: a request would cross the provider's network in the clear."""


class ReceiptRefused(Refused):
    """A receipt is malformed, altered, signed by a key other than the attested one, or does
    not describe this very request and response."""


_BY_REASON: dict[str, type[EndpointRefused]] = {
    "ReplayedProof": NonceMismatch,
    "NonceMismatch": NonceMismatch,
    "KeyNotBound": KeyNotBound,
    "EvidenceTooOld": EvidenceTooOld,
    # reference values the client policy pins (appraisal's `_reference` and the GPU RIMs)
    **dict.fromkeys(
        ("MeasurementMismatch", "MrTdMismatch", "MrConfigIdMismatch", "Rtmr0Mismatch",
         "Rtmr1Mismatch", "Rtmr2Mismatch", "Rtmr3Mismatch", "MeasurementMissing", "RimMissing"),
        MeasurementNotInPolicy,
    ),
}


def refusal(verdict: Verdict, endpoint: str) -> EndpointRefused:
    """The exception for a verdict that is not verified, typed by its first failure."""
    failures = verdict.failures or (Failure(verdict.reason or "NoEvidence", verdict.message),)
    first = failures[0]
    cls = _BY_REASON.get(first.reason, EndpointRefused)
    return cls(first.reason, verdict.message, endpoint=endpoint, failures=failures)
