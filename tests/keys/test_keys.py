"""The workload key: owner-only by default, readable by the meter's group when asked, bound by
report_data exactly as attestation expects."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from cocoon import keys


def test_owner_only_by_default(tmp_path: Path) -> None:
    path = tmp_path / "agent" / "key.pem"
    key = keys.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys.public_bytes(keys.load_or_create(path)) == keys.public_bytes(key)


def test_group_readable_for_the_meter(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    keys.load_or_create(path, group=os.getgid())
    info = path.stat()
    assert stat.S_IMODE(info.st_mode) == 0o640
    assert info.st_gid == os.getgid()


def test_report_data_binds_nonce_and_key() -> None:
    nonce, public = b"\x01" * 32, b"\x02" * 32
    assert keys.report_data(nonce, public) == hashlib.sha512(nonce + public).digest()
    with pytest.raises(ValueError, match="nonce must be 32 bytes"):
        keys.report_data(b"short", public)
    with pytest.raises(ValueError, match="32 bytes"):
        keys.report_data(nonce, b"short")


def test_a_non_ed25519_key_file_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    path = tmp_path / "ec.pem"
    path.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ValueError, match="expected an Ed25519 private key"):
        keys.load(path)
