"""Payer and wallet keys on disk or in a Kubernetes Secret.

Two formats, both generated at run time: the project's PKCS#8 PEM (cocoon.keys) for files, and
a JSON object with the base64 32-byte seed for Secrets (`privateKey`) plus the public key.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cocoon import keys

SEED_BYTES = 32


class KeyFileError(ValueError):
    pass


def to_json(key: Ed25519PrivateKey) -> str:
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return json.dumps(
        {"privateKey": base64.b64encode(seed).decode(), "publicKey": keys.public_bytes(key).hex()}
    )


def from_seed_b64(text: str) -> Ed25519PrivateKey:
    try:
        seed = base64.b64decode(text.strip(), validate=True)
    except binascii.Error as exc:
        raise KeyFileError("the private key is not valid base64") from exc
    if len(seed) != SEED_BYTES:
        raise KeyFileError(f"an ed25519 seed is {SEED_BYTES} bytes, got {len(seed)}")
    return Ed25519PrivateKey.from_private_bytes(seed)


def load(path: Path) -> Ed25519PrivateKey:
    """Reads a PEM file, a JSON key object, or a bare base64 seed (a mounted Secret key)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise KeyFileError(f"{path}: {exc.strerror}; create one with `cocoon ton keygen`") from exc
    if text.lstrip().startswith("-----BEGIN"):
        try:
            return keys.load(path)
        except ValueError as exc:
            raise KeyFileError(f"{path}: {exc}") from exc
    if text.lstrip().startswith("{"):
        try:
            return from_seed_b64(json.loads(text)["privateKey"])
        except (ValueError, KeyError) as exc:
            raise KeyFileError(f"{path}: expected a JSON object with privateKey") from exc
    return from_seed_b64(text)
