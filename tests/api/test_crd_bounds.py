"""Numeric bounds in the generated CRDs must survive the API server's float64 comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

CRDS = sorted((Path(__file__).resolve().parents[2] / "crds").glob("*.yaml"))


def _bounds(node: Any, path: str = "") -> list[tuple[str, int]]:
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("maximum", "minimum") and isinstance(value, int):
                found.append((f"{path}.{key}", value))
            found += _bounds(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _bounds(value, f"{path}[{i}]")
    return found


@pytest.mark.parametrize("crd", CRDS, ids=lambda p: p.name)
def test_bounds_are_exact_as_float64(crd: Path) -> None:
    """2^63 - 1 as a bound reads as -2^63 on the server and refuses every value (seen: a
    usage report's status write failed with 422 for journalSequence 10)."""
    for where, value in _bounds(yaml.safe_load(crd.read_text())):
        assert float(value) == value and abs(value) <= 2**53, f"{crd.name} {where}: {value}"
