"""Node agents as local processes standing in for the DaemonSet's pods, and the simulated TEE
they attest with: per-cluster root keys and the policy that trusts them."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cocoon import keys
from cocoon.agent.simulated import SimulatedTee
from cocoon.devstack.binaries import repo_root
from cocoon.devstack.cluster import LocalCluster
from cocoon.devstack.process import Managed, Supervisor
from cocoon.devstack.stack import OPERATOR_NAMESPACE, Operator
from cocoon.meter import sidecar


def agent_pod(node: str) -> dict[str, Any]:
    """The agent DaemonSet's Pod on `node` as kwok runs it: what an agent's tokens are bound to,
    so the operator's node binding is exercised as in a cluster."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"cocoon-agent-{node}",
            "namespace": OPERATOR_NAMESPACE,
            "labels": {"app.kubernetes.io/name": "cocoon-agent"},
        },
        "spec": {
            "nodeName": node,
            "serviceAccountName": "cocoon-agent",
            "automountServiceAccountToken": False,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "agent", "image": "cocoon:dev"}],
        },
    }


class Agents:
    """Node agents as local processes standing in for the DaemonSet's pods.

    Each answers for one kwok node with a ServiceAccount token bound to a real (kwok) Pod on
    that node, so the operator's node binding is exercised exactly as in a cluster."""

    def __init__(self, cluster: LocalCluster, operator: Operator, simulated_dir: Path) -> None:
        self.cluster = cluster
        self.operator = operator
        self.simulated_dir = simulated_dir
        self.supervisor = Supervisor(cluster.workdir / "logs")
        self.running: dict[str, Managed] = {}

    def token_for(self, node: str) -> Path:
        """Two tokens bound to a real (kwok) agent Pod on `node`, as the DaemonSet projects them:
        one for the API server (returned) and one for the operator (audience cocoon-operator,
        next to it), so a token meant for one is refused by the other."""
        pod = agent_pod(node)
        self.cluster.apply(pod)
        name = pod["metadata"]["name"]

        def token(*audience: str) -> str:
            return self.cluster.kubectl(
                "create", "token", "cocoon-agent", "-n", OPERATOR_NAMESPACE,
                "--bound-object-kind", "Pod", "--bound-object-name", name, "--duration=1h",
                *audience,
            ).stdout.strip()  # fmt: skip

        path = self.cluster.workdir / f"agent-{node}.token"
        path.write_text(token())
        self.operator_token(node).write_text(token(f"--audience={sidecar.TOKEN_AUDIENCE}"))
        return path

    def operator_token(self, node: str) -> Path:
        return self.cluster.workdir / f"agent-{node}.operator-token"

    def key_file(self, node: str) -> Path:
        """The node's workload key, the agent's alone."""
        return self.cluster.workdir / f"agent-{node}" / keys.WORKLOAD_KEY_FILE

    def meter_socket(self, node: str) -> Path:
        """The node-local socket on which the agent gives meters evidence for their keys."""
        return self.cluster.workdir / f"agent-{node}" / "meter" / "agent.sock"

    def kubeconfig_for(self, node: str, token_file: Path) -> Path:
        return self.cluster.token_kubeconfig(
            token_file.read_text(), self.cluster.workdir / f"agent-{node}.kubeconfig"
        )

    def argv(
        self,
        node: str,
        *extra: str,
        token_file: Path | None = None,
        simulated_dir: Path | None = None,
    ) -> list[str]:
        if token_file is None:
            self.token_for(node)
        return [
            sys.executable,
            "-m",
            "cocoon.cli",
            "agent",
            "run",
            "--node",
            node,
            "--operator-url",
            self.operator.api_url,
            "--ca-file",
            str(self.operator.ca_file),
            "--token-file",
            str(self.operator_token(node)),
            "--key-file",
            str(self.key_file(node)),
            "--meter-socket",
            str(self.meter_socket(node)),
            "--simulated",
            str(simulated_dir or self.simulated_dir),
            "--poll-seconds",
            "0.5",
            *extra,
        ]

    def env(self, node: str, token_file: Path) -> dict[str, str]:
        return {"KUBECONFIG": str(self.kubeconfig_for(node, token_file)), "PYTHONUNBUFFERED": "1"}

    def start(self, node: str, *extra: str, simulated_dir: Path | None = None) -> Managed:
        token = self.token_for(node)
        process = self.supervisor.start(
            f"agent-{node}",
            self.argv(node, *extra, token_file=token, simulated_dir=simulated_dir),
            env=self.env(node, token),
            cwd=repo_root(),
        )
        self.running[node] = process
        return process

    def stop(self, node: str) -> None:
        process = self.running.pop(node, None)
        if process is not None:
            process.stop()

    def stop_all(self) -> None:
        self.supervisor.stop_all()
        self.running.clear()


def simulated_tee(directory: Path) -> Path:
    """A per-cluster simulated TEE (root keys generated now, never committed)."""
    SimulatedTee.generate(now=datetime.now(UTC)).save(directory, overwrite=True)
    return directory


def simulated_policy(
    directory: Path, name: str = "default", gpus: int = 8, **overrides: Any
) -> dict[str, Any]:
    """The policy `cocoon agent simulated policy` prints, with `overrides` in its spec."""
    document = SimulatedTee.load(directory).policy_document(name, gpus=gpus)
    spec = dict(document["spec"])  # type: ignore[call-overload]
    spec.update(overrides)
    return {**document, "spec": spec}
