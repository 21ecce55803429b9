"""What e2e tests share: the operator as a real process under its chart-granted identity."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cocoon.devstack.cluster import LocalCluster
from cocoon.devstack.process import Managed, Supervisor, wait_for

REPO = Path(__file__).resolve().parents[1]
OPERATOR_NAMESPACE = "cocoon-system"
RELEASE = "cocoon"


def install_crds(cluster: LocalCluster) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd",
        "-l",
        "app.kubernetes.io/part-of=cocoon",
    )


def chart_rbac(cluster: LocalCluster) -> str:
    """The operator's RBAC exactly as the Helm chart renders it."""
    out = cluster.helm(
        "template",
        RELEASE,
        str(REPO / "charts" / "cocoon"),
        "--namespace",
        OPERATOR_NAMESPACE,
        "--kube-version",
        "1.34.4",
        "--show-only",
        "templates/rbac-operator.yaml",
    )
    return out.stdout


def operator_kubeconfig(cluster: LocalCluster) -> Path:
    cluster.kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
    cluster.kubectl("apply", "-f", "-", input=chart_rbac(cluster))
    token = cluster.kubectl(
        "create", "token", "cocoon-operator", "-n", OPERATOR_NAMESPACE, "--duration=24h"
    ).stdout.strip()
    return cluster.token_kubeconfig(
        token, cluster.workdir / "operator.kubeconfig", namespace=OPERATOR_NAMESPACE
    )


class Operator:
    """`cocoon operator` as a child process; restartable and killable for crash tests."""

    def __init__(self, cluster: LocalCluster, kubeconfig: Path) -> None:
        self.cluster = cluster
        self.kubeconfig = kubeconfig
        self.supervisor = Supervisor(cluster.workdir / "logs")
        self.process: Managed | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        env = {"KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1"}
        self.process = self.supervisor.start(
            f"operator-{self.starts}",
            [sys.executable, "-m", "cocoon.cli", "operator", "-v"],
            env=env,
            cwd=REPO,
        )
        wait_for(
            lambda: (
                "Starting the watch-stream" in self.process.tail(400)  # type: ignore[union-attr]
                or "watch-stream for" in self.process.tail(400)
            ),  # type: ignore[union-attr]
            timeout=60,
            what="the operator's watch streams",
            watch=self.process,
        )

    def stop(self) -> None:
        self.supervisor.stop_all()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def log(self) -> str:
        return "\n".join(p.log.read_text(errors="replace") for p in self.supervisor.processes)


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


def environ_without_kubeconfig() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=120, check=False)
