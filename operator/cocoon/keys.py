"""The node workload key: the Ed25519 key that attestation binds and that meters sign with.

One format everywhere: a PKCS#8 PEM file (mode 0600) for the private key, 32 raw bytes for the
public key, and `report_data = SHA-512(nonce || public key)` to bind it into TEE evidence.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

NONCE_BYTES = 32
# where the agent keeps the key on the node; pool pods mount the folder read-only for the meter
WORKLOAD_KEY_DIR = "/var/lib/cocoon/agent"
WORKLOAD_KEY_FILE = "key.pem"
METER_GID = 65532  # the meter runs as this user and group and reads the key through the group


def generate() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def private_bytes(key: Ed25519PrivateKey) -> bytes:
    """The 32 raw private bytes, for deriving keys from this one (never for storage)."""
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def report_data(nonce: bytes, public_key: bytes) -> bytes:
    """The 64 bytes a TEE report must carry to prove it was made for this nonce and this key."""
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"nonce must be {NONCE_BYTES} bytes, got {len(nonce)}")
    if len(public_key) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, got {len(public_key)}")
    return hashlib.sha512(nonce + public_key).digest()


def save(key: Ed25519PrivateKey, path: Path, group: int | None = None) -> None:
    """Owner-only, or owner plus `group` (the meter's group, which signs with the node's key)."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    if group is not None:
        os.chown(path, -1, group)
        path.chmod(0o640)


def load(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: expected an Ed25519 private key (PKCS#8 PEM)")
    return key


def load_or_create(path: Path, group: int | None = None) -> Ed25519PrivateKey:
    """Keys are generated at run time on the node that uses them, never shipped."""
    if path.exists():
        return load(path)
    key = generate()
    save(key, path, group)
    return key
