"""Signed receipts: every metered response says, under the meter's attested key, what it charged.

A receipt names the request, hashes what was asked and what was answered, and states the units
by category, the price, the cost and the channel's cumulative total at this meter instance after
the charge. The meter signs it with its in-memory receipt key, the key its endpoint evidence
binds, so a caller who verified the endpoint can check every charge without trusting the
provider or the operator.

Signed bytes: `DOMAIN` followed by the canonical JSON of the receipt (keys sorted, no spaces,
UTF-8). On the wire: `{"receipt": {...}, "signature": "<base64>"}`; unary HTTP responses carry
it base64url-encoded in the `Cocoon-Receipt` header, SSE streams end with an
`event: cocoon.receipt` event, gRPC responses carry it in the `cocoon-receipt` trailer.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import Field, ValidationError

from cocoon import keys
from cocoon.api.common import ApiModel, Nanoton

FORMAT = "cocoon.dev/receipt/v1"
DOMAIN = b"cocoon.dev/receipt/v1\n"
HEADER = "Cocoon-Receipt"
SSE_EVENT = "cocoon.receipt"
GRPC_TRAILER = "cocoon-receipt"


class _Strict(ApiModel):
    """Signed documents parse strictly: an unknown or altered field is a refusal, never
    silently dropped or defaulted back to what was signed."""

    model_config = ApiModel.model_config | {"extra": "forbid"}


class Receipt(_Strict):
    format: str = Field(pattern=f"^{FORMAT}$")
    request_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    meter_public_key: str = Field(pattern=r"^[0-9a-f]{64}$", description="Ed25519, hex.")
    pool: str
    channel: str
    model: str
    endpoint: str
    outcome: str
    request_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    response_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    units: dict[str, int] = Field(description="Units by category, as metered.")
    price: dict[str, Nanoton] = Field(description="The pool's price in force, per unit type.")
    cost_nanoton: Nanoton
    cumulative_nanoton: Nanoton = Field(
        description="The channel's total at this meter instance, this charge included."
    )
    issued_at: int = Field(ge=0, description="Unix seconds.")


class SignedReceipt(_Strict):
    receipt: Receipt
    signature: str


class ReceiptError(ValueError):
    """The receipt is malformed, altered, or signed by a key other than the trusted one."""


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical(receipt: Receipt) -> bytes:
    return json.dumps(
        receipt.model_dump(by_alias=True, mode="json"), sort_keys=True, separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


def sign(receipt: Receipt, key: Ed25519PrivateKey) -> SignedReceipt:
    if receipt.meter_public_key != keys.public_bytes(key).hex():
        raise ValueError("receipt.meterPublicKey must be the signing key's public key")
    signature = key.sign(DOMAIN + canonical(receipt))
    return SignedReceipt(receipt=receipt, signature=base64.b64encode(signature).decode())


def issue(
    key: Ed25519PrivateKey, public_hex: str, *, request_id: str, pool: str, channel: str,
    model: str, endpoint: str, outcome: str, request_sha256: str, response_sha256: str,
    units: dict[str, int], price: dict[str, str], cost_nanoton: int, cumulative_nanoton: int,
) -> SignedReceipt:
    """Sign a receipt on the meter's hot path: the fields are the meter's own, so no
    validation pass (verification parses and validates)."""
    receipt = Receipt.model_construct(
        format=FORMAT, request_id=request_id, meter_public_key=public_hex, pool=pool,
        channel=channel, model=model, endpoint=endpoint, outcome=outcome,
        request_sha256=request_sha256, response_sha256=response_sha256, units=units,
        price=price, cost_nanoton=str(cost_nanoton),
        cumulative_nanoton=str(cumulative_nanoton), issued_at=int(time.time()),
    )
    signature = key.sign(DOMAIN + canonical(receipt))
    return SignedReceipt.model_construct(
        receipt=receipt, signature=base64.b64encode(signature).decode()
    )


def encode_header(signed: SignedReceipt) -> str:
    raw = signed.model_dump_json(by_alias=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_header(value: str) -> SignedReceipt:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        return SignedReceipt.model_validate_json(raw)
    except (ValueError, ValidationError) as exc:
        raise ReceiptError(f"malformed receipt: {exc}") from None


def verify(signed: SignedReceipt, trusted_public_key: bytes | None = None) -> Receipt:
    """The receipt, if its signature holds and (when given) it is the trusted meter's key."""
    try:
        public = bytes.fromhex(signed.receipt.meter_public_key)
        signature = base64.b64decode(signed.signature, validate=True)
    except ValueError as exc:
        raise ReceiptError(f"malformed receipt: {exc}") from None
    if trusted_public_key is not None and public != trusted_public_key:
        raise ReceiptError("receipt is signed by a key other than the attested meter's")
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(
            signature, DOMAIN + canonical(signed.receipt)
        )
    except (InvalidSignature, ValueError) as exc:
        raise ReceiptError("receipt signature does not verify") from exc
    return signed.receipt
