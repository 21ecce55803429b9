"""An EAR-style attestation result (IETF RATS EAR, as Trustee issues it) as an EdDSA JWT.

The operator signs one per verdict; the meter serves it to callers, who check the signature
with the operator's public key and see which devices were verified and which workload key
(the meter's signing key) the node's evidence bound.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from cocoon import __version__, keys
from cocoon.attestation.verdict import Verdict

PROFILE = "tag:github.com,2023:veraison/ear"
AFFIRMING, CONTRAINDICATED = "affirming", "contraindicated"


class TokenError(ValueError):
    """The token is malformed, expired or not signed by the expected key."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_id(public_key: bytes) -> str:
    return _b64(public_key[:12])


def claims(
    verdict: Verdict, *, node: str, nonce: bytes, workload_key: bytes, policy: str
) -> dict[str, Any]:
    return {
        "eat_profile": PROFILE,
        "iat": verdict.issued_at,
        "exp": verdict.expires_at,
        "eat_nonce": _b64(nonce),
        "ear.verifier-id": {"developer": "cocoon.dev", "build": f"cocoon {__version__}"},
        "ear.status": AFFIRMING if verdict.verified else CONTRAINDICATED,
        "submods": {
            d.name: {
                "ear.status": AFFIRMING if not d.failures else CONTRAINDICATED,
                "cocoon.dev/tee": str(d.tee),
                **({"cocoon.dev/reason": d.reason} if d.reason else {}),
            }
            for d in verdict.devices
        },
        "cocoon.dev/node": node,
        "cocoon.dev/policy": policy,
        "cocoon.dev/workload-key": workload_key.hex(),
    }


def sign(payload: Mapping[str, Any], key: Ed25519PrivateKey) -> str:
    header = {"alg": "EdDSA", "typ": "JWT", "kid": key_id(keys.public_bytes(key))}
    signing_input = ".".join(
        _b64(json.dumps(part, separators=(",", ":"), sort_keys=True).encode())
        for part in (header, payload)
    )
    return f"{signing_input}.{_b64(key.sign(signing_input.encode()))}"


def verify(token: str, public_key: bytes, *, now: int) -> dict[str, Any]:
    """The claims, if `public_key` signed the token and it has not expired."""
    try:
        header_b64, payload_b64, signature_b64 = token.split(".")
        header = json.loads(_unb64(header_b64))
        payload = json.loads(_unb64(payload_b64))
        signature = _unb64(signature_b64)
    except (ValueError, UnicodeDecodeError) as exc:
        raise TokenError(f"not a JWT: {exc}") from None
    if not isinstance(header, dict) or header.get("alg") != "EdDSA":
        raise TokenError("only EdDSA (Ed25519) tokens are issued by cocoon")
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            signature, f"{header_b64}.{payload_b64}".encode()
        )
    except (InvalidSignature, ValueError):
        raise TokenError("signature does not verify with the operator's key") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("exp"), int):
        raise TokenError("no expiry in the token")
    if now >= payload["exp"]:
        raise TokenError(f"token expired at {payload['exp']}")
    return payload


def jwks(public_key: bytes) -> dict[str, Any]:
    """The operator's verification key in JWK Set form (OKP, Ed25519)."""
    return {
        "keys": [
            {
                "kty": "OKP",
                "crv": "Ed25519",
                "x": _b64(public_key),
                "kid": key_id(public_key),
                "alg": "EdDSA",
                "use": "sig",
            }
        ]
    }
