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

from cocoon.devstack import chart, money, realpool
from cocoon.devstack.binaries import ensure_binaries
from cocoon.devstack.cluster import LocalCluster
from cocoon.devstack.node import RealNode
from cocoon.ton import settlement
from cocoon.ton.tvm import Address
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
        # a caller's PATH without /usr/sbin (iptables, ip, runc): the node sets its own
        with pytest.MonkeyPatch.context() as env:
            env.setenv("PATH", "/usr/bin:/bin")
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


@dataclass
class Installed:
    real: RealStack
    simulated: Path


@pytest.fixture(scope="module")
def installed(real: RealStack) -> Installed:
    """The chart with stock values, and the real node attested by the agent pod."""
    return Installed(real, realpool.install_attested(real.cluster, real.node, PAYOUT))


def test_the_chart_runs_for_real(installed: Installed) -> None:
    cluster, ns = installed.real.cluster, chart.OPERATOR_NAMESPACE
    for name in ("cocoon-operator", "cocoon-agent", "cocoon-chain-emulator"):
        assert chart.ready_pods(cluster, ns, f"app.kubernetes.io/name={name}"), name


# -- a pool on real pods -------------------------------------------------------------------------

TENANT = "tenant"
POOL = "chat"
CHANNEL = "main"


@dataclass
class Paid:
    installed: Installed
    caller: realpool.Caller
    address: str  # the pool Service's ClusterIP

    @property
    def cluster(self) -> LocalCluster:
        return self.installed.real.cluster

    def channel(self) -> dict[str, Any]:
        return realpool.status(self.cluster, "paymentchannel.cocoon.dev", TENANT, CHANNEL)

    def settled(self) -> dict[str, Any] | None:
        """The channel once it owes exactly what the caller's receipts charged, per journal."""
        status = self.channel()
        charged = sum(cost for _, cost in self.caller.costs())
        meters = status.get("meters") or []
        per_journal = sum(int(m["costNanoton"]) for m in meters)
        done = charged > 0 and int(status.get("owed", 0)) == charged == per_journal
        return status if done else None


@pytest.fixture(scope="module")
def paid(installed: Installed) -> Paid:
    cluster, node = installed.real.cluster, installed.real.node
    realpool.create_pool(cluster, TENANT, POOL, version=VERSION)
    eventually(
        lambda: realpool.ready_pool_pods(cluster, TENANT, POOL),
        timeout=240,
        what="the pool's pod Ready (Triton's readiness through the meter)",
    )
    credential = realpool.open_channel(cluster, node, TENANT, POOL, CHANNEL)
    caller = realpool.Caller(node, cluster.workdir / "caller", credential)
    caller.policy(installed.simulated)
    return Paid(installed, caller, realpool.service_ip(cluster, TENANT, POOL))


def test_a_pool_pod_runs_for_real_and_serves_a_paid_call(paid: Paid) -> None:
    [pod] = realpool.ready_pool_pods(paid.cluster, TENANT, POOL)
    assert pod["spec"]["nodeName"] == paid.installed.real.node.name
    statuses = {s["name"]: s for s in pod["status"]["containerStatuses"]}
    assert set(statuses) == {"triton", "meter"}
    assert all(s["ready"] and s["restartCount"] == 0 for s in statuses.values()), statuses
    triton = next(c for c in pod["spec"]["containers"] if c["name"] == "triton")
    assert triton["securityContext"]["readOnlyRootFilesystem"] is True
    # what the runtime was told: the OCI spec containerd runs Triton with
    container_id = statuses["triton"]["containerID"].removeprefix("containerd://")
    oci = json.loads(paid.installed.real.node.ctr("containers", "info", container_id).stdout)
    assert oci["Spec"]["root"]["readonly"] is True
    assert oci["Spec"]["process"]["user"]["uid"] == 1000
    assert not oci["Spec"]["process"]["capabilities"].get("effective")
    paid.caller.paid(paid.address, "hello")
    [(meter_key, cost)] = paid.caller.costs()
    assert cost > 0
    status = eventually(paid.settled, timeout=60, what="the channel owes what was charged")
    assert [m["publicKey"] for m in status["meters"]] == [meter_key]


def test_a_killed_pool_pod_is_replaced_and_billing_continues(paid: Paid) -> None:
    [old] = realpool.ready_pool_pods(paid.cluster, TENANT, POOL)
    before = {m["instance"] for m in paid.channel().get("meters") or []}
    assert before, "the first test's usage was accepted"
    paid.cluster.kubectl("delete", "pod", old["metadata"]["name"], "-n", TENANT, "--wait=false")
    eventually(
        lambda: [
            p for p in realpool.ready_pool_pods(paid.cluster, TENANT, POOL)
            if p["metadata"]["name"] != old["metadata"]["name"]
        ],
        timeout=240,
        what="the Deployment's replacement pod Ready",
    )  # fmt: skip
    paid.caller.paid(paid.address, "after the kill")
    status = eventually(
        lambda: (s := paid.settled()) and len(s["meters"]) == len(before) + 1 and s,
        timeout=60,
        what="the new meter's usage accepted beside the old journal's",
    )
    after = {m["instance"] for m in status["meters"]}
    assert before < after
    keys = [key for key, _ in paid.caller.costs()]
    assert keys[-1] != keys[0], "the replacement pod registered its own meter key"


def test_the_provider_is_paid_on_the_charts_chain(paid: Paid) -> None:
    """What `make demo` shows: with a threshold the usage so far exceeds, the operator's claim
    lands on the chart's emulator and the payout address holds exactly what was claimed less
    the fees read from the chain (the channel's status reconciled against the chain)."""
    owed = int(paid.channel()["owed"])
    threshold = settlement.DEFAULT_MIN_CLAIM // 2
    assert owed >= threshold, "two paid calls so far"
    patch = {"spec": {"claim": {"threshold": str(threshold)}}}
    paid.cluster.kubectl(
        "patch", "paymentchannel", CHANNEL, "-n", TENANT, "--type=merge", "-p", json.dumps(patch)
    )
    eventually(
        lambda: int(paid.channel().get("claimed", 0)) > 0, timeout=120, what="the first claim"
    )
    chain = realpool.chain_url(paid.cluster, paid.installed.real.node)
    ref = f"{TENANT}/{CHANNEL}"
    payout = money.paid_out(chain, paid.cluster.kubeconfig, ref, payee=Address(PAYOUT))
    assert 0 < payout.books.claimed <= owed
    assert payout.payee_received == payout.books.claimed - payout.payee_fees > 0


def test_helm_upgrade_rolls_the_operator_without_losing_usage(paid: Paid) -> None:
    selector = "app.kubernetes.io/name=cocoon-operator"
    ns = chart.OPERATOR_NAMESPACE
    old = {p["metadata"]["name"] for p in chart.ready_pods(paid.cluster, ns, selector)}
    charged = len(paid.caller.costs())
    chart.upgrade(paid.cluster, payout=PAYOUT, extra=("--set", "operator.verbose=true"))
    new = {p["metadata"]["name"] for p in chart.ready_pods(paid.cluster, ns, selector)}
    assert new and not new & old, "every operator pod was replaced"
    paid.caller.paid(paid.address, "after the upgrade")
    assert len(paid.caller.costs()) == charged + 1
    eventually(paid.settled, timeout=90, what="usage from before and after the upgrade settled")


def test_uninstall_leaves_no_verdict_pool_or_finalizer_behind(paid: Paid) -> None:
    cluster, node = paid.cluster, paid.installed.real.node
    assert realpool.attested_label(cluster, node.name) == "true"
    cluster.helm("uninstall", chart.RELEASE, "--namespace", chart.OPERATOR_NAMESPACE, "--wait")
    assert realpool.attested_label(cluster, node.name) is None
    assert (get(cluster, "attestednodes") or {}).get("items") == []
    deployment = get(cluster, "deployment", POOL, "-n", TENANT) or {}
    assert deployment["spec"]["replicas"] == 0
    eventually(
        lambda: not (get(cluster, "pods", "-n", TENANT) or {}).get("items"),
        timeout=120,
        what="the pool's pods gone",
    )
    refused = paid.caller.call(paid.address, "after the uninstall")
    assert refused.returncode != 0
    # the channel's finalizer was released: the tenant's namespace goes in bounded time
    cluster.kubectl("delete", "namespace", TENANT, "--timeout=120s")
    # the CRDs are kept (helm never deletes them); their removal command is in the docs
    assert get(cluster, "crd", "inferencepools.cocoon.dev")
