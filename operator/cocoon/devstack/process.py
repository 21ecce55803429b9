"""Child processes of the local stack: own session and log; they die with us, stop in order."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when its parent dies, even by SIGKILL, so a
    killed test run leaves no server behind."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM into SystemExit (SIGINT already raises KeyboardInterrupt) while inside, so
    `finally` blocks stop every child on `kill` or Ctrl-C as on a normal exit."""

    def exit_on(signum: int, _: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, exit_on)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def wait_for_signal() -> None:
    """Sleep until SIGINT or SIGTERM, which raise out of here under `stop_on_signals`."""
    while True:
        signal.pause()


def terminate(popen: subprocess.Popen[Any], grace: float = 10.0) -> int:
    """SIGTERM, then SIGKILL after `grace` seconds; returns the exit code."""
    if popen.poll() is None:
        popen.terminate()
        try:
            return popen.wait(grace)
        except subprocess.TimeoutExpired:
            popen.kill()
    return popen.wait()


def probe_context() -> ssl.SSLContext:
    """TLS without verification, like a kubelet's HTTPS probe: reachability only, never trust
    (callers verify an attested endpoint with cocoon.client)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def http_ok(url: str, timeout: float = 2.0, *, context: ssl.SSLContext | None = None) -> bool:
    """Whether a health endpoint of our own stack answers 200 right now."""
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:  # noqa: S310
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass
class Managed:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = 10.0) -> None:
        if not self.alive():
            return
        with _suppress_lookup():
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            with _suppress_lookup():
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)

    def kill(self) -> None:
        """SIGKILL, for crash tests: nothing gets a chance to flush."""
        with _suppress_lookup():
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(5)


class _suppress_lookup:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: object, tb: object) -> bool:
        return exc_type is ProcessLookupError


@dataclass
class Supervisor:
    """Starts processes and stops them in reverse order, whatever happened in between."""

    log_dir: Path
    die_with_parent: bool = True
    processes: list[Managed] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Managed:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
                preexec_fn=die_with_parent if self.die_with_parent else None,  # noqa: PLW1509
            )
        managed = Managed(name, popen, log)
        self.processes.append(managed)
        return managed

    def stop_all(self) -> None:
        for managed in reversed(self.processes):
            managed.stop()
        self.processes.clear()


def wait_for(
    condition: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
    watch: Managed | None = None,
) -> None:
    """Poll `condition` until true; fail fast with the process log if `watch` dies meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if watch is not None and not watch.alive():
            raise RuntimeError(f"{watch.name} exited while waiting for {what}:\n{watch.tail()}")
        time.sleep(interval)
    tail = f"\n{watch.name} log:\n{watch.tail()}" if watch else ""
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{tail}")


def free_port() -> int:
    """A loopback port free right now (some servers, Triton among them, refuse port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
