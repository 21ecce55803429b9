"""Run `cocoon meter serve` as a child process: for the local stack, tests and benchmarks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cocoon.devstack.process import free_port, http_ok, probe_context
from cocoon.devstack.triton import TritonServer
from cocoon.meter.credits import credential_hash
from cocoon.meter.pricing import Price


def write_credits(path: Path, channels: dict[str, tuple[str, int]]) -> None:
    """Write a credit file {credential: (channel, limit)} atomically, as the operator would."""
    document = {
        "channels": [
            {
                "channel": ch,
                "credentialSha256": credential_hash(cred),
                "creditLimitNanoton": str(lim),
            }
            for cred, (ch, lim) in channels.items()
        ]
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document))
    tmp.replace(path)


@dataclass
class MeterProcess:
    process: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    admin_port: int
    journal: Path
    log_path: Path
    tls: bool = False

    @property
    def http_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def is_ready(self) -> bool:
        # readiness only: callers verify the endpoint with cocoon.client, never this probe
        return http_ok(f"{self.http_url}/v2/health/ready", timeout=1, context=probe_context())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)


def start_meter(
    triton: TritonServer,
    workdir: Path,
    *,
    price: Price | None = None,
    models: tuple[str, ...] = ("add", "tokens"),
    extra_args: tuple[str, ...] = (),
    log_level: str = "info",
    ready_timeout: float = 90.0,
    simulated_tee: Path | None = None,
    operator_url: str | None = None,
) -> MeterProcess:
    """Start a meter on free loopback ports in front of `triton`; state files go in `workdir`.

    An empty credit file is created there if absent. With `simulated_tee` (a saved simulated
    TEE) the meter serves attested TLS; without, plain HTTP (`--plaintext`). With
    `operator_url` it polls that operator for credit and reports usage there instead.
    """
    price = price or Price()
    workdir.mkdir(parents=True, exist_ok=True)
    proof = (
        f"--simulated-tee={simulated_tee}" if simulated_tee is not None else "--plaintext"
    )
    credits = workdir / "credits.json"
    if not credits.exists():
        write_credits(credits, {})
    http_port, grpc_port, admin_port = free_port(), free_port(), free_port()
    journal = workdir / "journal.db"
    log_path = workdir / f"meter-{http_port}.log"
    args = [
        sys.executable,
        "-m",
        "cocoon.cli",
        "meter",
        "serve",
        "--pool=tenant/pool",
        f"--upstream-http={triton.http_url}",
        f"--upstream-grpc={triton.grpc_target}",
        "--listen=127.0.0.1",
        f"--http-port={http_port}",
        f"--grpc-port={grpc_port}",
        f"--admin-port={admin_port}",
        f"--journal={journal}",
        f"--operator-url={operator_url}" if operator_url else f"--credits={credits}",
        proof,
        *price.cli_args(),
        *(f"--model={m}" for m in models),
        f"--log-level={log_level}",
        *extra_args,
    ]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    meter = MeterProcess(
        process, http_port, grpc_port, admin_port, journal, log_path, simulated_tee is not None
    )
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"meter exited with {process.returncode}: {meter.log_text()}")
        if meter.is_ready():
            return meter
        time.sleep(0.05)
    meter.stop(signal.SIGKILL)
    raise TimeoutError(f"meter not ready after {ready_timeout}s: {meter.log_text()}")
