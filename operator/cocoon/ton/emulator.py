"""Starts and stops the local chain emulator (contracts/emulator/server.mjs, the real TVM behind
the toncenter v2 subset) and drives its test-only endpoints: faucet and time travel.

Started with a `state` file, the emulator writes its chain there when stopped and loads it when
started again, so a chain outage can be staged as a real one ends: the same chain, on the same
address, comes back."""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from cocoon.devstack.process import die_with_parent, terminate
from cocoon.ton.tvm import Address, raw

READY_PREFIX = "listening on "


class EmulatorError(RuntimeError):
    pass


def contracts_dir() -> Path:
    """`$COCOON_CONTRACTS_DIR`, else the checkout's contracts/ (editable install)."""
    configured = os.environ.get("COCOON_CONTRACTS_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[3] / "contracts"


@dataclass
class Emulator:
    url: str
    process: subprocess.Popen[str]
    state: Path | None = None

    def stop(self, grace_s: float = 10.0) -> None:
        code = terminate(self.process, grace_s)
        if self.state is not None and code != 0:
            raise EmulatorError(f"the emulator exited {code}: its state in {self.state} is stale")

    def restart(self) -> None:
        """Start again on the same address, from the state the stop saved (needs `state`)."""
        if self.state is None or not self.state.is_file():
            raise EmulatorError("no saved state: start the emulator with state= and stop it")
        address = urlsplit(self.url)
        assert address.hostname is not None and address.port is not None
        self.process = start(address.hostname, address.port, state=self.state).process

    def __enter__(self) -> Emulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start(
    host: str = "127.0.0.1",
    port: int = 0,
    contracts: Path | None = None,
    *,
    node: str = "node",
    startup_s: float = 60.0,
    state: Path | None = None,
) -> Emulator:
    """Starts the emulator (port 0: a free one) and returns once it accepts requests; with
    `state`, from that file when it exists, and saving to it when stopped."""
    root = contracts or contracts_dir()
    if not (root / "node_modules" / "@ton" / "sandbox").is_dir():
        raise EmulatorError(f"{root}/node_modules is missing: run `npm ci` in {root}")
    saved = ("--state", str(state.resolve())) if state is not None else ()
    process = subprocess.Popen(
        [node, "emulator/server.mjs", "--host", host, "--port", str(port), *saved],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=die_with_parent,  # noqa: PLW1509 - prctl only, no locks taken
    )
    assert process.stdout is not None
    deadline = time.monotonic() + startup_s
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if not selector.select(left):
                break
            line = process.stdout.readline()
            if line.startswith(READY_PREFIX):
                return Emulator(line[len(READY_PREFIX) :].strip(), process, state)
            if not line:
                break
    Emulator("", process).stop()
    raise EmulatorError(
        f"the emulator did not start within {startup_s:.0f} s (exit {process.poll()}); "
        f"try `node emulator/server.mjs` in {root}"
    )


async def _post(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.post(url + path, json=body) as resp:
        payload: dict[str, Any] = await resp.json(content_type=None)
    if not payload.get("ok"):
        raise EmulatorError(f"{path}: {payload.get('error')}")
    result: dict[str, Any] = payload["result"]
    return result


async def faucet(url: str, address: Address, amount: int) -> None:
    """Credits `amount` nanoton to `address` (non-bounceable, so a fresh wallet can receive)."""
    await _post(url, "/emulator/faucet", {"address": raw(address), "amount": str(amount)})


async def travel(url: str, seconds: int) -> int:
    """Moves the emulator's clock forward; returns the new chain time."""
    result = await _post(url, "/emulator/time", {"advance": seconds})
    return int(result["now"])
