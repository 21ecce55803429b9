"""What every appraisal check shares: the challenge's expectations, the check signature, and
running a table of checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from cocoon.attestation.policy import Policy
from cocoon.attestation.verdict import DeviceResult, Failure, Tee

E = TypeVar("E")


@dataclass(frozen=True)
class Expectations:
    """What this appraisal's challenge requires: CPU report_data, GPU nonce (None: unchecked)."""

    report_data: bytes | None = None
    gpu_nonce: bytes | None = None


Check = Callable[[E, Policy, Expectations], Failure | None]


def run_checks(
    checks: Sequence[Check[E]], subject: E, policy: Policy, expect: Expectations
) -> tuple[Failure, ...]:
    return tuple(f for check in checks if (f := check(subject, policy, expect)) is not None)


def at(now: int) -> datetime:
    return datetime.fromtimestamp(now, UTC)


def result(name: str, tee: Tee, failure: Failure) -> DeviceResult:
    return DeviceResult(name, tee, (failure,))
