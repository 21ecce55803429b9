"""Signed HTTP requests: how a meter proves it holds a registered receipt key on a route with
no body to sign (the operator's credit route).

Wire format, one header:

    Cocoon-Signature: key=<64 hex: Ed25519 public key>, created=<unix seconds>,
                      nonce=<32 hex: 16 random bytes>, signature=<128 hex>

The signature is Ed25519 over the UTF-8 bytes of

    "cocoon-signed-request-v1\\n" METHOD "\\n" TARGET "\\n" created "\\n" nonce

where TARGET is the request's path and query exactly as sent (`/usage/v1/credit/ns/pool`), so a
signature for one pool's credit is worthless for another's. A verifier accepts `created` within
`WINDOW_SECONDS` of its own clock and each (key, nonce) once within that window: a captured
request cannot be replayed to the replica that saw it, and is useless anywhere after the window.
A public key alone (published in InferencePool status) authenticates nothing.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from cocoon import keys

HEADER = "Cocoon-Signature"
CONTEXT = "cocoon-signed-request-v1"
WINDOW_SECONDS = 30
NONCE_BYTES = 16
_FIELDS = {"key": 32, "nonce": NONCE_BYTES, "signature": 64}
_HOW = (
    f"sign the request: send `{HEADER}: key=<hex public key>, created=<unix seconds>, "
    "nonce=<32 hex>, signature=<hex Ed25519 signature>` (see cocoon.signed_request)"
)


class SignatureRefused(ValueError):
    """Why a signed request is refused: `reason` is a bounded metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class SignedRequest:
    public_key: bytes
    created: int
    nonce: bytes
    signature: bytes

    @property
    def key_hex(self) -> str:
        return self.public_key.hex()


def message(method: str, target: str, created: int, nonce: bytes) -> bytes:
    return f"{CONTEXT}\n{method.upper()}\n{target}\n{created}\n{nonce.hex()}".encode()


def sign(
    key: Ed25519PrivateKey, method: str, target: str, *, now: float | None = None,
    nonce: bytes | None = None,
) -> str:
    """The header value signing `method target` now."""
    created = int(time.time() if now is None else now)
    nonce = nonce or os.urandom(NONCE_BYTES)
    signature = key.sign(message(method, target, created, nonce))
    public = keys.public_bytes(key).hex()
    return f"key={public}, created={created}, nonce={nonce.hex()}, signature={signature.hex()}"


def parse(value: str | None) -> SignedRequest:
    if not value:
        raise SignatureRefused("unsigned", f"the request is not signed; {_HOW}")
    fields: dict[str, str] = {}
    for part in value.split(","):
        name, _, text = part.strip().partition("=")
        fields[name] = text
    try:
        raw = {name: bytes.fromhex(fields[name]) for name in _FIELDS}
        created = int(fields["created"])
    except (KeyError, ValueError):
        raise SignatureRefused("malformed_signature", f"the {HEADER} header is malformed; {_HOW}"
                               ) from None
    if any(len(raw[name]) != size for name, size in _FIELDS.items()):
        raise SignatureRefused("malformed_signature", f"a {HEADER} field has the wrong length; "
                               f"{_HOW}")
    return SignedRequest(raw["key"], created, raw["nonce"], raw["signature"])


def verify(signed: SignedRequest, method: str, target: str, *, now: float) -> None:
    """Raise SignatureRefused unless fresh and signed by `signed.public_key` for this request."""
    if abs(now - signed.created) > WINDOW_SECONDS:
        raise SignatureRefused(
            "stale_signature",
            f"the request was signed at {signed.created}, more than {WINDOW_SECONDS} s from the "
            "operator's clock; sign each request afresh and keep the clock in sync (NTP)",
        )
    try:
        Ed25519PublicKey.from_public_bytes(signed.public_key).verify(
            signed.signature, message(method, target, signed.created, signed.nonce)
        )
    except InvalidSignature:
        raise SignatureRefused(
            "bad_signature", f"the signature does not verify for {method.upper()} {target}; "
            f"{_HOW}"
        ) from None


class ReplayGuard:
    """Remembers each (key, nonce) for twice the window; bounded, refusing when full."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._seen: OrderedDict[tuple[bytes, bytes], float] = OrderedDict()

    def admit(self, signed: SignedRequest, *, now: float) -> None:
        """Record the nonce, or raise SignatureRefused if it was used already."""
        while self._seen and next(iter(self._seen.values())) < now - 2 * WINDOW_SECONDS:
            self._seen.popitem(last=False)
        entry = (signed.public_key, signed.nonce)
        if entry in self._seen:
            raise SignatureRefused(
                "replayed", "this signed request was already used; sign every request with a "
                "fresh nonce",
            )
        if len(self._seen) >= self.max_entries:
            raise SignatureRefused(
                "replay_cache_full", "too many signed requests in the last minute; retry later",
            )
        self._seen[entry] = now
