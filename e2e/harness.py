"""What e2e tests share besides the stack itself (cocoon.devstack): reading and waiting."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from typing import Any

from cocoon.devstack.cluster import LocalCluster
from cocoon.devstack.process import wait_for


def get(cluster: LocalCluster, *args: str) -> Any:
    result = cluster.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def eventually(check: Callable[[], Any], *, timeout: float = 60, what: str = "") -> Any:
    """Wait until `check` returns something truthy and return it (never sleep for luck)."""
    box: list[Any] = []

    def probe() -> bool:
        value = check()
        if value:
            box.append(value)
            return True
        return False

    wait_for(
        probe, timeout=timeout, what=what or getattr(check, "__name__", "condition"), interval=0.2
    )
    return box[-1]


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


class BlackHole:
    """A loopback TCP listener that accepts every connection and never sends a byte."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.server.settimeout(0.2)
        self.held: list[socket.socket] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.getsockname()[1]}"

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            self.held.append(conn)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join()
        for conn in self.held:
            conn.close()
        self.server.close()
