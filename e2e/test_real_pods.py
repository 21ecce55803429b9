"""Real pods: a real kubelet on containerd + runc with bridge networking, kube-proxy and CoreDNS
beside the kwok nodes, running the images `make images` built and the chart as a provider
installs it. Pod logs are read from the kubelet's log files: `kubectl logs` cannot reach a
kubelet inside the node's network namespace (see cocoon.devstack.node)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cocoon.devstack import chart
from cocoon.devstack.cluster import LocalCluster, ensure_binaries
from cocoon.devstack.node import RealNode
from cocoon.devstack.stack import simulated_policy, simulated_tee
from e2e.harness import eventually, get

pytestmark = [pytest.mark.e2e]

VERSION = "0.1.0"
COCOON_IMAGE = f"ghcr.io/cocoon-k8s/cocoon:{VERSION}"
PAYOUT = "0:" + "ab" * 32


@dataclass
class RealStack:
    cluster: LocalCluster
    node: RealNode

    def pod_log(self, namespace: str, pod: str) -> str:
        files = sorted(self.node.pod_logs.glob(f"{namespace}_{pod}_*/*/*.log"))
        return "".join(f.read_text(errors="replace") for f in files)


@pytest.fixture(scope="module")
def real() -> Iterator[RealStack]:
    images = chart.ensure_images()
    workdir = Path(tempfile.mkdtemp(prefix="cocoon-real-"))
    cluster = LocalCluster(workdir, ensure_binaries())
    cluster.start()
    node = RealNode(cluster)
    leftovers: list[str] = []
    try:
        node.start(images)
        yield RealStack(cluster, node)
    finally:
        leftovers = node.stop()
        cluster.stop()
        cluster.remove_workdir()
    assert leftovers == [], f"the node left things behind: {leftovers}"


def phase(cluster: LocalCluster, namespace: str, name: str) -> str:
    pod = get(cluster, "pod", name, "-n", namespace) or {}
    return str(pod.get("status", {}).get("phase", ""))


PROBE = """
import json, socket, ssl, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
ip = socket.gethostbyname("kubernetes.default.svc.cluster.local")
ctx = ssl.create_default_context(cafile=f"{sa}/ca.crt")
req = urllib.request.Request(
    "https://kubernetes.default.svc/version",
    headers={"Authorization": "Bearer " + open(f"{sa}/token").read()},
)
version = json.load(urllib.request.urlopen(req, context=ctx, timeout=10))["gitVersion"]
print(json.dumps({"ip": ip, "version": version}))
"""


def test_a_pod_resolves_and_reaches_the_kubernetes_service(real: RealStack) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe", "namespace": "default"},
        "spec": {
            "nodeName": real.node.name,
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "probe",
                    "image": COCOON_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["python", "-c", PROBE],
                    "securityContext": {
                        "runAsNonRoot": True,
                        "readOnlyRootFilesystem": True,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }
    real.cluster.apply(pod)
    done = eventually(
        lambda: (
            phase(real.cluster, "default", "probe") in ("Succeeded", "Failed")
            and phase(real.cluster, "default", "probe")
        ),
        timeout=120,
        what="the probe pod finishes",
    )
    log = real.pod_log("default", "probe")
    assert done == "Succeeded", log
    answer = json.loads(log.strip().splitlines()[-1].split(" ", 3)[-1])
    assert answer == {"ip": "10.96.0.1", "version": "v1.34.4"}


def test_the_chart_runs_for_real(real: RealStack) -> None:
    sim = simulated_tee(real.cluster.workdir / "sim")
    chart.install(real.cluster, simulated_dir=sim, payout=PAYOUT)
    real.cluster.apply(simulated_policy(sim, gpus=1))
    ns = chart.OPERATOR_NAMESPACE
    for name in ("cocoon-operator", "cocoon-agent", "cocoon-chain-emulator"):
        assert chart.ready_pods(real.cluster, ns, f"app.kubernetes.io/name={name}"), name

    def verified() -> dict[str, Any] | None:
        node = get(real.cluster, "node", real.node.name) or {}
        labels = node.get("metadata", {}).get("labels", {})
        return node if labels.get("cocoon.dev/attested") == "true" else None

    eventually(verified, timeout=120, what="the real node attested by the agent pod")
