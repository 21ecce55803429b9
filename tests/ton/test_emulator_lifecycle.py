"""The chain emulator never outlives the process that started it: not on SIGTERM (the demo's
`finally` stops it), not on SIGKILL (the kernel signals it when its parent dies)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.chain

PARENT = """
from cocoon.devstack.process import stop_on_signals, wait_for_signal
from cocoon.ton import emulator

with stop_on_signals():
    chain = emulator.start()
    try:
        print(chain.process.pid, flush=True)
        wait_for_signal()
    finally:
        chain.stop()
"""


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def _wait_gone(pid: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_the_emulator_stops_with_its_parent(sig: signal.Signals) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    assert parent.stdout is not None
    emulator_pid = int(parent.stdout.readline())
    try:
        assert not _gone(emulator_pid)
        parent.send_signal(sig)
        parent.wait(30)
        assert _wait_gone(emulator_pid), f"emulator {emulator_pid} outlived its parent ({sig!r})"
    finally:
        if not _gone(emulator_pid):
            os.kill(emulator_pid, signal.SIGKILL)
