"""Shared test data: the real evidence vectors copied into tests/data/attestation."""

from __future__ import annotations

from pathlib import Path

from cocoon.attestation.policy import Policy

DATA = Path(__file__).resolve().parent.parent / "data" / "attestation"

SNP_AT = 1766000000
GPU_550_AT = 1766000000
GPU_535_AT = 1718000000
TDX_AT = 1752919234
TDX_OUTDATED_AT = 1771498731


def read(relative: str) -> bytes:
    return (DATA / relative).read_bytes()


DEFAULT = Policy.default()
