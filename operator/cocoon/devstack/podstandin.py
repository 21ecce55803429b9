"""Pods that kwok only pretends to run: real Triton and meter processes started from the pod
spec the operator rendered, given what the kubelet would give them (a pod-bound token)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cocoon.devstack import triton
from cocoon.devstack.cluster import LocalCluster
from cocoon.devstack.process import Managed, Supervisor, free_port, http_ok, probe_context, wait_for
from cocoon.devstack.triton import DEMO_MODELS, TritonServer
from cocoon.meter import sidecar


def pod_token(cluster: LocalCluster, pod: dict[str, Any], audience: str) -> str:
    """A ServiceAccount token bound to `pod`, as the kubelet projects it into the pod."""
    meta = pod["metadata"]
    return cluster.kubectl(
        "create", "token", pod["spec"].get("serviceAccountName") or "default",
        "-n", meta["namespace"], "--bound-object-kind", "Pod", "--bound-object-name",
        meta["name"], f"--audience={audience}", "--duration=1h",
    ).stdout.strip()  # fmt: skip


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
