"""The local stack beyond the control plane: CRDs and the chart's security objects, the operator
under its chart-granted ServiceAccount, node agents with pod-bound tokens, the simulated TEE, and
pod stand-ins that run real Triton and meter processes for pods kwok only pretends to run.

The e2e tests and `cocoon dev demo` share all of it, so what is tested is what is demonstrated.
"""

from __future__ import annotations

import ssl
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cocoon import keys
from cocoon.agent.simulated import SimulatedTee
from cocoon.devstack import triton
from cocoon.devstack.binaries import repo_root
from cocoon.devstack.cluster import LocalCluster
from cocoon.devstack.gpunode import GpuNode
from cocoon.devstack.process import (
    Managed,
    Supervisor,
    free_port,
    http_ok,
    probe_context,
    wait_for,
)
from cocoon.devstack.triton import DEMO_MODELS, TritonServer
from cocoon.meter import sidecar

OPERATOR_NAMESPACE = "cocoon-system"
RELEASE = "cocoon"


def install_crds(cluster: LocalCluster) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(repo_root() / "crds"))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd",
        "-l",
        "app.kubernetes.io/part-of=cocoon",
    )


def chart_templates(cluster: LocalCluster, *templates: str) -> str:
    """Templates exactly as the Helm chart renders them: what runs locally is what ships."""
    shows = [arg for t in templates for arg in ("--show-only", f"templates/{t}")]
    out = cluster.helm(
        "template",
        RELEASE,
        str(repo_root() / "charts" / "cocoon"),
        "--namespace",
        OPERATOR_NAMESPACE,
        "--kube-version",
        "1.34.4",
        *shows,
    )
    return out.stdout


def install_security(cluster: LocalCluster) -> None:
    """RBAC for operator and agent, and the admission policy; wait until the policy bites."""
    cluster.kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=chart_templates(
            cluster, "rbac-operator.yaml", "rbac-agent.yaml", "admission-policy.yaml"
        ),
    )
    cluster.add_nodes(GpuNode("vap-probe", gpus=0, tee=None))
    node_kc = cluster.certificate_kubeconfig(
        "system:node:vap-probe", "system:nodes", cluster.workdir / "vap-probe.kubeconfig"
    )

    def denied() -> bool:
        result = cluster.kubectl(
            "label",
            "node",
            "vap-probe",
            "cocoon.dev/attested=true",
            "--dry-run=server",
            kubeconfig=node_kc,
            check=False,
        )
        return "ValidatingAdmissionPolicy" in result.stderr

    wait_for(denied, timeout=60, what="the attestation admission policy to take effect")
    cluster.kubectl("delete", "node", "vap-probe")


def operator_kubeconfig(cluster: LocalCluster) -> Path:
    token = cluster.kubectl(
        "create", "token", "cocoon-operator", "-n", OPERATOR_NAMESPACE, "--duration=24h"
    ).stdout.strip()
    return cluster.token_kubeconfig(
        token, cluster.workdir / "operator.kubeconfig", namespace=OPERATOR_NAMESPACE
    )


SHORT_LEASE = {
    "COCOON_LEASE_SECONDS": "6",
    "COCOON_LEASE_RENEW_DEADLINE_SECONDS": "4",
    "COCOON_LEASE_RETRY_SECONDS": "1",
}


class Operator:
    """`cocoon operator` as a child process; restartable and killable for crash tests.

    Several may run against one cluster (`name` tells them apart, in logs and in the Lease's
    holder): all serve the API, the Lease holder runs the controllers. Leases are short here
    (6 s) so that tests of a killed leader do not wait long."""

    def __init__(
        self,
        cluster: LocalCluster,
        kubeconfig: Path,
        env: dict[str, str] | None = None,
        name: str = "operator",
    ) -> None:
        self.cluster = cluster
        self.kubeconfig = kubeconfig
        self.env = env or {}
        self.name = name
        self.supervisor = Supervisor(cluster.workdir / "logs")
        self.process: Managed | None = None
        self.starts = 0
        self.api_port = free_port()
        # the operator API serves TLS with a certificate from the cluster CA, as the chart's
        self.tls_cert, self.tls_key = cluster.serving_certificate(
            "cocoon-operator", ["127.0.0.1", "localhost"]
        )
        self.ca_file = cluster.ca_cert
        self.tls = ssl.create_default_context(cafile=str(self.ca_file))
        # one signing key for every replica and restart, as the chart's Secret: results stay
        # verifiable and any replica checks a meter challenge another issued
        self.signing_key = cluster.workdir / "operator-signing.key"
        keys.load_or_create(self.signing_key)

    @property
    def api_url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def identity_prefix(self) -> str:
        """How this process's Lease holder identity begins."""
        return f"{self.name}-{self.starts}-"

    def start(self, *, lead: bool = True) -> None:
        """Start and wait until the API answers and, with `lead`, the controllers watch."""
        self.starts += 1
        env = {
            "KUBECONFIG": str(self.kubeconfig),
            "PYTHONUNBUFFERED": "1",
            "HOSTNAME": f"{self.name}-{self.starts}",
            "COCOON_API_HOST": "127.0.0.1",
            "COCOON_API_PORT": str(self.api_port),
            "COCOON_API_TLS_CERT": str(self.tls_cert),
            "COCOON_API_TLS_KEY": str(self.tls_key),
            "COCOON_OPERATOR_CA_PEM": self.ca_file.read_text(),
            "COCOON_SIGNING_KEY_FILE": str(self.signing_key),
            "COCOON_NAMESPACE": OPERATOR_NAMESPACE,
            "COCOON_OPERATOR_URL": self.api_url,
            "COCOON_RESYNC_SECONDS": "2",
            # every local agent, meter and test shares 127.0.0.1: one source address, not one
            # per pod as in a cluster
            "COCOON_API_RATE_PER_SOURCE": "500",
            "COCOON_API_BURST_PER_SOURCE": "2000",
            **SHORT_LEASE,
            **self.env,
        }
        self.process = self.supervisor.start(
            f"{self.name}-{self.starts}",
            [sys.executable, "-m", "cocoon.cli", "operator", "-v"],
            env=env,
            cwd=repo_root(),
        )
        process = self.process
        marker = "watch-stream for" if lead else "waiting to lead"
        seen: list[bool] = []  # the whole log: at fleet scale the marker scrolls out of a tail

        def up() -> bool:
            if not seen and marker in process.log.read_text(errors="replace"):
                seen.append(True)
            return bool(seen) and http_ok(f"{self.api_url}/readyz", context=self.tls)

        wait_for(
            up,
            timeout=60,
            what=f"{self.name}'s API and {'watch streams' if lead else 'lease wait'}",
            watch=process,
        )

    def stop(self) -> None:
        self.supervisor.stop_all()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def log(self) -> str:
        return "\n".join(p.log.read_text(errors="replace") for p in self.supervisor.processes)


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
        pod = f"cocoon-agent-{node}"
        self.cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod,
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
        )

        def token(*audience: str) -> str:
            return self.cluster.kubectl(
                "create", "token", "cocoon-agent", "-n", OPERATOR_NAMESPACE,
                "--bound-object-kind", "Pod", "--bound-object-name", pod, "--duration=1h",
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


def pod_token(cluster: LocalCluster, pod: dict[str, Any], audience: str) -> str:
    """A ServiceAccount token bound to `pod`, as the kubelet projects it into the pod."""
    meta = pod["metadata"]
    return cluster.kubectl(
        "create", "token", pod["spec"].get("serviceAccountName") or "default",
        "-n", meta["namespace"], "--bound-object-kind", "Pod", "--bound-object-name",
        meta["name"], f"--audience={audience}", "--duration=1h",
    ).stdout.strip()  # fmt: skip


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


# -- pods that kwok only pretends to run -----------------------------------------------------

_LOCAL_ONLY = (
    "--model-repository=",
    "--http-address=",
    "--http-port=",
    "--grpc-address=",
    "--grpc-port=",
    "--metrics-address=",
    "--metrics-port=",
    "--exit-timeout-secs=",
)


@dataclass
class PodStandIn:
    """Real Triton and meter processes for one pool pod, run from the pod spec the operator
    rendered: the same arguments and environment; only paths and ports are made local."""

    pod: str
    node: str
    triton: TritonServer
    meter: Managed
    http_url: str
    grpc_target: str
    admin_url: str

    def stop(self) -> None:
        self.meter.stop()
        self.triton.stop()


def stand_in(
    pod: dict[str, Any],
    *,
    cluster: LocalCluster,
    workdir: Path,
    evidence_socket: Path,
    operator_url: str,
    supervisor: Supervisor,
    models: Path = DEMO_MODELS,
) -> PodStandIn:
    """The pod's meter gets what the kubelet would give it: the node agent's socket and a token
    bound to this pod (audience cocoon-operator), so it registers exactly as in a cluster."""
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    name = pod["metadata"]["name"]
    node = pod["spec"]["nodeName"]
    pod_dir = workdir / name
    pod_dir.mkdir(parents=True, exist_ok=True)
    token_file = pod_dir / "token"
    token_file.write_text(pod_token(cluster, pod, sidecar.TOKEN_AUDIENCE))
    kept = [a for a in containers["triton"]["args"] if not a.startswith(_LOCAL_ONLY)]
    server = triton.start(models, workdir=pod_dir / "triton", extra_args=tuple(kept))
    ports = {"--http-port": free_port(), "--grpc-port": free_port(), "--admin-port": free_port()}
    local = {
        "--upstream-http": server.http_url,
        "--upstream-grpc": server.grpc_target,
        "--journal": str(pod_dir / "journal.db"),
        "--evidence-socket": str(evidence_socket),
        "--token-file": str(token_file),
        "--operator-url": operator_url,
        **{flag: str(port) for flag, port in ports.items()},
    }
    meter_spec = containers["meter"]
    args = [
        f"{a.split('=', 1)[0]}={local[a.split('=', 1)[0]]}" if a.split("=", 1)[0] in local else a
        for a in meter_spec["args"]
    ]
    env = {e["name"]: e["value"] for e in meter_spec.get("env", []) if "value" in e}
    env.update(POD_NAME=name, NODE_NAME=node)
    meter = supervisor.start(
        f"meter-{name}", [sys.executable, "-m", "cocoon.cli", *args, "--listen=127.0.0.1"], env=env
    )
    http_url = f"https://127.0.0.1:{ports['--http-port']}"
    try:
        wait_for(
            lambda: http_ok(f"{http_url}/v2/health/ready", context=probe_context()),
            timeout=60,
            what=f"the meter of {name}",
            watch=meter,
        )
    except BaseException:
        meter.stop()
        server.stop()
        raise
    return PodStandIn(
        pod=name,
        node=node,
        triton=server,
        meter=meter,
        http_url=http_url,
        grpc_target=f"127.0.0.1:{ports['--grpc-port']}",
        admin_url=f"http://127.0.0.1:{ports['--admin-port']}",
    )
