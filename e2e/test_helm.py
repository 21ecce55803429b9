"""The Helm chart on a real control plane: lint, server-side validation, install, upgrade with a
CRD change, uninstall that leaves nothing behind, agent placement on TEE nodes only, and the RBAC
the e2e operator runs with being exactly the chart's.

The session cluster already holds crds/ (applied with kubectl, not owned by Helm) and the e2e
operator's RBAC under release "cocoon" in cocoon-system; these tests install release "prov" in
namespace "cocoon-helm" with crds.install=false there, and exercise the CRD upgrade path in a
fresh cluster of their own."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cocoon.devstack.binaries import ensure_binaries, repo_root
from cocoon.devstack.cluster import LocalCluster
from cocoon.devstack.gpunode import GpuNode
from cocoon.devstack.stack import chart_templates
from e2e.harness import eventually, get

pytestmark = pytest.mark.e2e

CHART = repo_root() / "charts" / "cocoon"
KUBE_VERSION = "1.34.4"
RELEASE = "prov"
NAMESPACE = "cocoon-helm"
PAYOUT = "0:" + "ab" * 32
INSTANCE = f"app.kubernetes.io/instance={RELEASE}"
# namespaced kinds the chart may create; all must be gone after uninstall
NAMESPACED = ",".join(
    ["deployments", "daemonsets", "replicasets", "pods", "services", "serviceaccounts", "secrets",
     "configmaps", "networkpolicies", "roles", "rolebindings", "poddisruptionbudgets"]
)  # fmt: skip


def render(cluster: LocalCluster, *args: str, chart: Path = CHART) -> list[dict[str, Any]]:
    out = cluster.helm(
        "template", RELEASE, str(chart), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION,
        *args,
    ).stdout  # fmt: skip
    return [d for d in yaml.safe_load_all(out) if d]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} rendered"
    return matches[0]


def pods(cluster: LocalCluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    found = get(cluster, "pods", "-n", namespace, "-l", selector) or {"items": []}
    return list(found["items"])


def running_on(cluster: LocalCluster, namespace: str, selector: str) -> set[str]:
    return {
        p["spec"].get("nodeName", "")
        for p in pods(cluster, namespace, selector)
        if p.get("status", {}).get("phase") == "Running"
        and not p["metadata"].get("deletionTimestamp")  # a terminating pod is on its way out
    }


def leftovers(cluster: LocalCluster, namespace: str) -> list[str]:
    """Namespaced objects of the release, and its cluster-scoped ones (CRDs excepted)."""
    names: list[str] = []
    out = cluster.kubectl("get", NAMESPACED, "-n", namespace, "-l", INSTANCE, "-o", "name")
    names += out.stdout.split()
    for kind, name in [
        ("clusterrole", f"{RELEASE}-operator"),
        ("clusterrole", f"{RELEASE}-agent"),
        ("clusterrolebinding", f"{RELEASE}-operator"),
        ("clusterrolebinding", f"{RELEASE}-agent"),
        ("validatingadmissionpolicy", f"{RELEASE}-attestation-guard"),
        ("validatingadmissionpolicybinding", f"{RELEASE}-attestation-guard"),
    ]:
        if get(cluster, kind, name) is not None:
            names.append(f"{kind}/{name}")
    # the fixed-name ServiceAccounts carry the instance label too, but check them by name
    for sa in ("cocoon-operator", "cocoon-agent"):
        if get(cluster, "serviceaccount", sa, "-n", namespace) is not None:
            names.append(f"serviceaccount/{sa}")
    return names


def nvidia_runtime_class() -> dict[str, Any]:
    """What the GPU operator creates on real clusters; the agent's pods name it."""
    return {
        "apiVersion": "node.k8s.io/v1",
        "kind": "RuntimeClass",
        "metadata": {"name": "nvidia"},
        "handler": "nvidia",
    }


# -- rendering ------------------------------------------------------------------------------


def test_lint_strict_with_default_and_dev_values(cluster: LocalCluster) -> None:
    for extra in ([], ["--set", "simulated=true", "--set", f"payout.address={PAYOUT}"]):
        result = cluster.helm(
            "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION, *extra
        )
        assert "0 chart(s) failed" in result.stdout


def test_values_schema_rejects_bad_values(cluster: LocalCluster) -> None:
    bad = [
        "payout.address=EQ-too-short",
        "operator.version=latest",
        "agent.teeTypes={sgx}",
        "agent.tokenExpirationSeconds=60",
        "operator.pullPolicy=Sometimes",
        "operator.replicas=0",
    ]
    for setting in bad:
        result = cluster.helm(
            "template", RELEASE, str(CHART), "--kube-version", KUBE_VERSION, "--set", setting,
            check=False,
        )  # fmt: skip
        assert result.returncode != 0, setting
        assert "schema" in result.stderr, (setting, result.stderr)
    for good in ("EQ" + "A" * 46, "-1:" + "0" * 64, PAYOUT):
        render(cluster, "--set", f"payout.address={good}")


def test_rendered_shapes(cluster: LocalCluster) -> None:
    docs = render(cluster, "--set", f"payout.address={PAYOUT}")
    operator = find(docs, "Deployment", f"{RELEASE}-operator")
    # HA: two replicas, rolled one at a time, spread over nodes, a PDB, a Lease to share
    assert operator["spec"]["replicas"] == 2
    assert operator["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = operator["spec"]["template"]["spec"]
    spread = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert spread[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    pdb = find(docs, "PodDisruptionBudget", f"{RELEASE}-operator")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == operator["spec"]["selector"]["matchLabels"]
    role = find(docs, "Role", f"{RELEASE}-operator-leader")
    assert {v for r in role["rules"] for v in r["verbs"]} == {"get", "create", "update"}
    assert role["rules"][1]["resourceNames"] == [f"{RELEASE}-operator"]
    single = render(cluster, "--set", f"payout.address={PAYOUT}", "--set", "operator.replicas=1")
    assert not [d for d in single if d["kind"] == "PodDisruptionBudget"]
    (container,) = pod["containers"]
    assert container["args"][0] == "operator"
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"]
    assert sc["capabilities"] == {"drop": ["ALL"]} and not sc["allowPrivilegeEscalation"]
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["COCOON_PAYOUT_ADDRESS"] == PAYOUT
    assert env["COCOON_METER_IMAGE"] == "ghcr.io/cocoon-k8s/cocoon:0.1.0"
    assert env["COCOON_API_PORT"] == "8443"
    assert env["COCOON_OPERATOR_URL"] == f"https://{RELEASE}-operator.{NAMESPACE}.svc:8443"
    assert env["COCOON_LEASE_NAME"] == f"{RELEASE}-operator"

    agent = find(docs, "DaemonSet", f"{RELEASE}-agent")["spec"]["template"]["spec"]
    assert agent["automountServiceAccountToken"] is False
    tolerations = {(t["key"], t["effect"]) for t in agent["tolerations"]}
    assert {("cocoon.dev/unattested", "NoSchedule"), ("cocoon.dev/unattested", "NoExecute")} <= (
        tolerations
    )
    (agent_container,) = agent["containers"]
    assert agent_container["args"][:3] == [
        "agent",
        "run",
        "--configfs-tsm=/sys/kernel/config/tsm/report",
    ]
    assert not agent_container["securityContext"]["privileged"]
    assert agent_container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    (token,) = [v for v in agent["volumes"] if v["name"] == "token"]
    sources = token["projected"]["sources"]
    assert sources[0]["serviceAccountToken"]["expirationSeconds"] == 3600
    hostpaths = sorted(v["hostPath"]["path"] for v in agent["volumes"] if "hostPath" in v)
    assert hostpaths == [
        "/sys/kernel/config/tsm/report", "/var/lib/cocoon/agent", "/var/run/cocoon/meter"
    ]
    sa = find(docs, "ServiceAccount", "cocoon-agent")
    assert sa["automountServiceAccountToken"] is False

    # uninstall: a pre-delete Job under the operator's identity releases what it vouched for
    hook = find(docs, "Job", f"{RELEASE}-uninstall")
    assert hook["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete"
    hook_pod = hook["spec"]["template"]["spec"]
    assert hook_pod["serviceAccountName"] == pod["serviceAccountName"]
    assert hook_pod["containers"][0]["args"][:2] == ["uninstall", f"--operator={RELEASE}-operator"]
    assert hook_pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"]
    kept = render(
        cluster, "--set", f"payout.address={PAYOUT}", "--set", "uninstall.releaseOnDelete=false"
    )
    assert not [d for d in kept if d["kind"] == "Job"]

    # monitoring is off by default, and needs the Prometheus Operator's API when on
    assert not [
        d for d in docs if d["kind"] in ("ServiceMonitor", "PodMonitor", "PrometheusRule")
    ]
    on = [
        "--set",
        "monitoring.serviceMonitor.enabled=true",
        "--set",
        "monitoring.prometheusRule.enabled=true",
    ]
    refused = cluster.helm(
        "template", RELEASE, str(CHART), "--kube-version", KUBE_VERSION, *on, check=False
    )
    assert refused.returncode != 0 and "Prometheus Operator" in refused.stderr
    with_monitoring = render(
        cluster, *on, "--set", "monitoring.dashboard.enabled=true",
        "--api-versions", "monitoring.coreos.com/v1",
    )  # fmt: skip
    kinds = sorted(
        d["kind"]
        for d in with_monitoring
        if d["kind"] in ("ServiceMonitor", "PodMonitor", "PrometheusRule")
    )
    # meters are scraped on the pod: their Service exposes serving ports only
    assert kinds == ["PodMonitor", "PrometheusRule", "ServiceMonitor"]
    meters = find(with_monitoring, "PodMonitor", f"{RELEASE}-meters")
    assert meters["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    rules = find(with_monitoring, "PrometheusRule", f"{RELEASE}-alerts")["spec"]["groups"][0][
        "rules"
    ]
    assert {"CocoonNodeAttestationFailing", "CocoonMeterRejectionsSpiking"} <= {
        r["alert"] for r in rules
    }
    dashboard = find(with_monitoring, "ConfigMap", f"{RELEASE}-dashboard")
    assert json.loads(dashboard["data"]["cocoon.json"])["uid"] == "cocoon-overview"


def test_server_side_dry_run_of_everything(cluster: LocalCluster) -> None:
    """Every object the chart can render, validated by the real API server (schemas, CEL)."""
    cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    pool_ns = f"pools-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", pool_ns)
    try:
        for extra in (
            [],
            ["--set", "simulated=true"],
            ["--set", "monitoring.dashboard.enabled=true", "--set", "agent.nfd=false",
             "--set", "operator.signingKey.existingSecret=mine"],
        ):  # fmt: skip
            manifest = cluster.helm(
                "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
                "--kube-version", KUBE_VERSION, "--set", f"payout.address={PAYOUT}",
                "--set", f"networkPolicy.poolNamespaces={{{pool_ns}}}", *extra,
            ).stdout  # fmt: skip
            result = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=manifest)
            assert "(server dry run)" in result.stdout
    finally:
        cluster.kubectl("delete", "namespace", pool_ns, "--wait=false")


# -- the chart's RBAC is the e2e operator's ---------------------------------------------------


def test_e2e_operator_runs_with_the_chart_rbac(cluster: LocalCluster) -> None:
    docs = [d for d in yaml.safe_load_all(chart_templates(cluster, "rbac-operator.yaml")) if d]
    rendered = find(docs, "ClusterRole", "cocoon-operator")
    live = get(cluster, "clusterrole", "cocoon-operator")
    assert live is not None
    assert live["rules"] == rendered["rules"]


# -- install, upgrade, uninstall on the shared cluster (CRDs owned by kubectl there) -----------


@pytest.fixture
def tee_nodes(cluster: LocalCluster) -> Iterator[dict[str, GpuNode]]:
    suffix = uuid.uuid4().hex[:6]
    nodes = {
        "tdx": GpuNode(f"helm-tdx-{suffix}", gpus=1, tee="tdx"),
        "nfd-snp": GpuNode(
            f"helm-nfd-{suffix}",
            gpus=1,
            tee=None,
            labels={"feature.node.kubernetes.io/cpu-security.sev.snp.enabled": "true"},
        ),
        "plain": GpuNode(f"helm-plain-{suffix}", gpus=1, tee=None),
        "nfd-false": GpuNode(
            f"helm-nfdno-{suffix}",
            gpus=1,
            tee=None,
            labels={"feature.node.kubernetes.io/cpu-security.tdx.protected": "false"},
        ),
    }
    cluster.add_nodes(*nodes.values())
    yield nodes
    cluster.kubectl("delete", "node", *(n.name for n in nodes.values()), "--wait=false")


def test_install_upgrade_uninstall(cluster: LocalCluster, tee_nodes: dict[str, GpuNode]) -> None:
    cluster.apply(nvidia_runtime_class())
    base = ["--namespace", NAMESPACE, "--create-namespace", "--set", "crds.install=false",
            "--set", f"payout.address={PAYOUT}", "--wait", "--timeout", "120s"]  # fmt: skip
    try:
        cluster.helm("install", RELEASE, str(CHART), *base)
        tee = {tee_nodes["tdx"].name, tee_nodes["nfd-snp"].name}
        selector = f"app.kubernetes.io/name=cocoon-agent,{INSTANCE}"

        # the agent lands on exactly the TEE nodes (among ours; other tests' nodes may exist)
        ours = {n.name for n in tee_nodes.values()}
        eventually(
            lambda: running_on(cluster, NAMESPACE, selector) & ours == tee,
            timeout=60,
            what="agent pods Running on the TEE nodes",
        )
        assert running_on(cluster, NAMESPACE, selector) & ours == tee
        op_selector = f"app.kubernetes.io/name=cocoon-operator,{INSTANCE}"
        eventually(lambda: running_on(cluster, NAMESPACE, op_selector), what="operator pod")
        assert len(pods(cluster, NAMESPACE, op_selector)) == 2

        # restricted Pod Security: the operator passes it; only the agent needs host access
        check = cluster.kubectl(
            "label", "namespace", NAMESPACE, "pod-security.kubernetes.io/enforce=restricted",
            "--dry-run=server", "--overwrite",
        )  # fmt: skip
        warnings = check.stderr
        assert f"{RELEASE}-agent" in warnings, warnings
        assert f"{RELEASE}-operator" not in warnings, warnings

        # the installed RBAC is the e2e operator's
        live = get(cluster, "clusterrole", f"{RELEASE}-operator")
        assert live["rules"] == get(cluster, "clusterrole", "cocoon-operator")["rules"]

        key_before = get(cluster, "secret", f"{RELEASE}-signing-key", "-n", NAMESPACE)
        assert key_before["data"]["signing.key"]

        # an upgrade that changes values: agents on NFD-only nodes are dropped, the key stays
        cluster.helm("upgrade", RELEASE, str(CHART), *base, "--set", "agent.nfd=false")
        eventually(
            lambda: running_on(cluster, NAMESPACE, selector) & ours == {tee_nodes["tdx"].name},
            timeout=120,
            what="agent only on the labelled TDX node after agent.nfd=false",
        )
        key_after = get(cluster, "secret", f"{RELEASE}-signing-key", "-n", NAMESPACE)
        assert key_after["data"] == key_before["data"], "the signing key must survive upgrades"
        history = cluster.helm("history", RELEASE, "-n", NAMESPACE, "-o", "json").stdout
        assert [r["status"] for r in json.loads(history)] == ["superseded", "deployed"]
    finally:
        cluster.helm(
            "uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout", "120s", check=False
        )
        cluster.kubectl("delete", "runtimeclass", "nvidia", check=False)

    eventually(lambda: not leftovers(cluster, NAMESPACE), timeout=60, what="nothing left behind")
    assert cluster.helm("list", "-n", NAMESPACE, "-q").stdout.strip() == ""
    cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false")


# -- the CRD upgrade path, in a fresh cluster where Helm owns the CRDs --------------------------


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path / "cluster", ensure_binaries())
    local.start()
    try:
        yield local
    finally:
        local.stop()


def chart_with_new_crd_field(tmp_path: Path) -> Path:
    """A copy of the chart whose AttestedNode CRD gains spec.fromTheFuture, version 0.1.1."""
    copy = tmp_path / "cocoon-next"
    shutil.copytree(CHART, copy)
    crd_file = copy / "files" / "crds" / "attestednodes.cocoon.dev.yaml"
    crd = yaml.safe_load(crd_file.read_text())
    (version,) = crd["spec"]["versions"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"]["fromTheFuture"] = {
        "type": "string",
        "description": "A field that only the next chart version knows.",
    }
    crd_file.write_text(yaml.safe_dump(crd, sort_keys=False))
    chart_yaml = yaml.safe_load((copy / "Chart.yaml").read_text())
    chart_yaml["version"] = "0.1.1"
    (copy / "Chart.yaml").write_text(yaml.safe_dump(chart_yaml, sort_keys=False))
    return copy


def served_spec_fields(cluster: LocalCluster) -> set[str]:
    crd = get(cluster, "crd", "attestednodes.cocoon.dev") or {}
    (version,) = crd["spec"]["versions"]
    return set(version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"])


def test_crds_install_upgrade_and_are_kept(fresh_cluster: LocalCluster, tmp_path: Path) -> None:
    cluster = fresh_cluster
    # somewhere for the operator and an agent to run (--wait waits for them)
    cluster.add_nodes(GpuNode("plain", gpus=0, tee=None), GpuNode("future-node", tee="sev-snp"))
    args = ["--namespace", NAMESPACE, "--create-namespace", "--set", "simulated=true",
            "--wait", "--timeout", "120s"]  # fmt: skip
    cluster.helm("install", RELEASE, str(CHART), *args)
    crds = {p.name.removesuffix(".yaml") for p in (repo_root() / "crds").glob("*.yaml")}
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{c}" for c in crds)
    )
    for name in crds:
        crd = get(cluster, "crd", name)
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == RELEASE
    assert "fromTheFuture" not in served_spec_fields(cluster)

    cluster.helm("upgrade", RELEASE, str(chart_with_new_crd_field(tmp_path)), *args)
    assert "fromTheFuture" in served_spec_fields(cluster)

    # the API server now serves the field: a client sees it in the published OpenAPI and it
    # survives a server-side round trip instead of being pruned
    explained = eventually(
        lambda: cluster.kubectl("explain", "attestednodes.spec.fromTheFuture", check=False).stdout,
        what="kubectl explain to know the new field",
    )
    assert "only the next chart version knows" in explained
    probe = {
        "apiVersion": "cocoon.dev/v1alpha1",
        "kind": "AttestedNode",
        "metadata": {"name": "future-node"},
        "spec": {"nodeName": "future-node", "tee": "sev-snp", "fromTheFuture": "kept"},
    }
    out = cluster.kubectl(
        "create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(probe)
    ).stdout
    assert json.loads(out)["spec"]["fromTheFuture"] == "kept"

    cluster.helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout", "120s")
    eventually(lambda: not leftovers(cluster, NAMESPACE), timeout=60, what="nothing left behind")
    # by policy the CRDs stay (deleting them would delete every custom resource with them)
    for name in crds:
        crd = get(cluster, "crd", name)
        assert crd is not None and crd["metadata"].get("deletionTimestamp") is None, name
    kept = get(cluster, "crd", "attestednodes.cocoon.dev")
    assert "fromTheFuture" in served_spec_fields(cluster) and kept is not None
