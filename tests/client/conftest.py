"""Fixtures: a simulated TEE, a client policy that pins its roots and measurement, and a real
TLS meter stand-in served from a loop thread (so sync and async httpx clients both reach it)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from cocoon.agent.simulated import SimulatedTee
from cocoon.client import ReceiptStore, Verifier, policy

from .fakemeter import FakeMeter, Knobs, LoopThread, serve


@pytest.fixture(scope="session")
def sim() -> SimulatedTee:
    return SimulatedTee.generate(now=datetime.now(UTC) - timedelta(days=1))


@pytest.fixture
def policy_file(sim: SimulatedTee, tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    document = sim.policy_document("mine", gpus=1)
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
def verifier(policy_file: Path) -> Verifier:
    return Verifier(policy.load(policy_file))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ReceiptStore]:
    s = ReceiptStore(tmp_path / "receipts.db")
    yield s
    s.close()


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.stop()


MeterFactory = Callable[..., tuple[FakeMeter, str]]


@pytest.fixture
def meter_at(sim: SimulatedTee, loop_thread: LoopThread) -> Iterator[MeterFactory]:
    """Start a fake meter with the given knobs; returns it and its https base URL."""
    runners = []

    def start(**knobs: object) -> tuple[FakeMeter, str]:
        meter = FakeMeter(sim, Knobs(**knobs))  # type: ignore[arg-type]
        runner, port = loop_thread.run(serve(meter))  # type: ignore[misc]
        runners.append(runner)
        return meter, f"https://127.0.0.1:{port}"

    yield start
    for runner in runners:
        loop_thread.run(runner.cleanup())
