"""RIM results are reused by digest, but never past their signing chain's validity."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from attestation_vectors import DEFAULT, GPU_535_AT, read

from cocoon.attestation import rim
from cocoon.attestation.roots import TrustStore
from cocoon.attestation.verdict import Rejected

RIM = read("nvgpu/h100_535_vbios_rim.swidtag")
AT = datetime.fromtimestamp(GPU_535_AT, UTC)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[datetime]:
    seen: list[datetime] = []
    real = rim._verify

    def counting(data: bytes, trust: TrustStore, at: datetime, **kw: object) -> object:
        seen.append(at)
        return real(data, trust, at, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(rim, "_cache", {})
    monkeypatch.setattr(rim, "_verify", counting)
    return seen


def test_a_rim_is_verified_once_per_digest(calls: list[datetime]) -> None:
    first = rim.verify_cached(RIM, DEFAULT.trust, AT)
    assert rim.verify_cached(RIM, DEFAULT.trust, AT.replace(day=AT.day + 1)) is first
    assert len(calls) == 1
    altered = RIM.replace(b"96.00.5E.00.01", b"96.00.5E.00.02", 1)
    with pytest.raises(Rejected):
        rim.verify_cached(altered, DEFAULT.trust, AT)  # another digest: verified, and refused
    assert len(calls) == 2


def test_a_cached_rim_expires_with_its_signer(calls: list[datetime]) -> None:
    rim.verify_cached(RIM, DEFAULT.trust, AT)
    later = datetime(2025, 12, 1, tzinfo=UTC)  # the RIM signer expired on 2025-06-22
    with pytest.raises(Rejected):
        rim.verify_cached(RIM, DEFAULT.trust, later)
    assert len(calls) == 2


def test_other_roots_do_not_share_the_entry(calls: list[datetime]) -> None:
    rim.verify_cached(RIM, DEFAULT.trust, AT)
    with pytest.raises(Rejected):
        rim.verify_cached(RIM, TrustStore.build([]), AT)
    assert len(calls) == 2
