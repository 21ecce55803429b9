"""Signed cumulative usage reports: what the PaymentChannel controller trusts to charge.

A report states, for one channel of one pool, the cumulative units and cost one meter journal
(`journalId`) holds, up to journal sequence `journalSequence`. The meter signs it with its
in-memory receipt key, which the operator verified at the meter's registration (endpoint
evidence plus the pod's bound token), so the controller can check that a registered meter of
that pool produced it and that nothing altered it.

Signed bytes: `DOMAIN` followed by the canonical JSON of the report (keys sorted, no spaces,
UTF-8). The envelope on the wire is `{"report": {...}, "signature": "<base64>"}`.
Cumulative figures only ever grow for a given (journalId, pool, channel); a controller keeps
the report with the highest journalSequence.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import Field

from cocoon import keys
from cocoon.api.common import MAX_COUNT, ApiModel, Nanoton

FORMAT = "cocoon.dev/usage-report/v1"
DOMAIN = b"cocoon.dev/usage-report/v1\n"


class UsageUnits(ApiModel):
    requests: int = Field(ge=0, le=MAX_COUNT, description="Calls charged.")
    input_tokens: int = Field(
        ge=0, le=MAX_COUNT, description="Prompt tokens reported by the model."
    )
    output_tokens: int = Field(ge=0, le=MAX_COUNT, description="Generated tokens.")
    cached_input_tokens: int = Field(
        default=0, ge=0, le=MAX_COUNT,
        description="Of inputTokens, those served from a prompt cache.",
    )
    reasoning_tokens: int = Field(
        default=0, ge=0, le=MAX_COUNT,
        description="Of outputTokens, those spent on hidden reasoning.",
    )


class UsageReport(ApiModel):
    format: str = Field(default=FORMAT, pattern=f"^{FORMAT}$")
    meter_public_key: str = Field(pattern=r"^[0-9a-f]{64}$", description="Ed25519, hex.")
    journal_id: str = Field(pattern=r"^[0-9a-f]{32}$", description="The meter journal's id.")
    pool: str = Field(description="namespace/name of the InferencePool.")
    channel: str = Field(description="namespace/name of the PaymentChannel.")
    units: UsageUnits
    cost_nanoton: Nanoton
    journal_sequence: int = Field(ge=0, le=MAX_COUNT)
    issued_at: datetime


class SignedUsageReport(ApiModel):
    report: UsageReport
    signature: str = Field(description="Base64 Ed25519 signature over DOMAIN + canonical JSON.")


class UsageReportError(ValueError):
    """The report is malformed, signed by another key, or altered."""


def canonical(report: UsageReport) -> bytes:
    return json.dumps(
        report.model_dump(by_alias=True, mode="json"),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


def sign(report: UsageReport, key: Ed25519PrivateKey) -> SignedUsageReport:
    if report.meter_public_key != keys.public_bytes(key).hex():
        raise ValueError("report.meterPublicKey must be the signing key's public key")
    signature = key.sign(DOMAIN + canonical(report))
    return SignedUsageReport(report=report, signature=base64.b64encode(signature).decode())


def verify(
    envelope: SignedUsageReport | dict[str, object] | bytes | str,
    trusted_public_key: bytes | None = None,
) -> UsageReport:
    """The report, if its signature holds under its own key and that key is the trusted one.

    Pass `trusted_public_key` (32 raw bytes, from the meter's registration) in production;
    without it only integrity is checked.
    """
    try:
        if isinstance(envelope, SignedUsageReport):
            signed = envelope
        elif isinstance(envelope, dict):
            signed = SignedUsageReport.model_validate(envelope)
        else:
            signed = SignedUsageReport.model_validate_json(envelope)
        public = bytes.fromhex(signed.report.meter_public_key)
        signature = base64.b64decode(signed.signature, validate=True)
    except ValueError as exc:
        raise UsageReportError(f"malformed usage report: {exc}") from exc
    if trusted_public_key is not None and public != trusted_public_key:
        raise UsageReportError("usage report is signed by a key other than the attested one")
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, DOMAIN + canonical(
            signed.report))
    except InvalidSignature as exc:
        raise UsageReportError("usage report signature does not verify") from exc
    return signed.report
