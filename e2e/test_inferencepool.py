"""InferencePool on a real control plane: CRD validation, placement on attested nodes only,
GPU capacity, pending reasons, rollouts, garbage collection, restarts, least privilege."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cocoon.devstack.cluster import LocalCluster
from cocoon.devstack.gpunode import GpuNode
from cocoon.devstack.stack import Operator
from e2e.conftest import NodeFactory
from e2e.harness import condition, eventually, get

pytestmark = pytest.mark.e2e


def pool(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": {
            "name": "add",
            "repository": {
                "initContainer": {
                    "image": {"repository": "registry.example/models", "tag": "add-1"},
                    "command": ["cp", "-r", "/add", "/models/"],
                }
            },
        },
        "replicas": 1,
        "gpusPerReplica": 8,
        "teeTypes": ["sev-snp", "tdx"],
        "price": {"perRequest": "1000", "perOutputToken": "20"},
    }
    body.update(spec)
    return {
        "apiVersion": "cocoon.dev/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def pods_of(cluster: LocalCluster, namespace: str, name: str) -> list[dict[str, Any]]:
    found = get(cluster, "pods", "-n", namespace, "-l", f"cocoon.dev/pool={name}")
    return [p for p in (found or {}).get("items", []) if not p["metadata"].get("deletionTimestamp")]


def ready_condition(cluster: LocalCluster, namespace: str, name: str) -> dict[str, Any]:
    return condition(get(cluster, "inferencepool.cocoon.dev", name, "-n", namespace), "Ready")


# -- the API server enforces the generated schemas ----------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"replicas": -1}, "spec.replicas"),
        ({"gpusPerReplica": 17}, "spec.gpusPerReplica"),
        ({"teeTypes": ["sgx"]}, "spec.teeTypes"),
        ({"price": {"perRequest": "1.5"}}, "spec.price.perRequest"),
        (
            {
                "model": {
                    "name": "add",
                    "repository": {"pvc": {"claimName": "m"}, "configMap": {"name": "c"}},
                }
            },
            "set exactly one of configMap, pvc or initContainer",
        ),
        (
            {"model": {"name": "add", "repository": {}}},
            "set exactly one of configMap, pvc or initContainer",
        ),
        ({"runtimeClassName": "Kata_QEMU"}, "spec.runtimeClassName"),
    ],
)
def test_invalid_pool_is_rejected_naming_the_field(
    cluster: LocalCluster, namespace: str, spec: dict[str, Any], expected: str
) -> None:
    result = cluster.kubectl(
        "create", "-f", "-", input=json.dumps(pool("bad", namespace, **spec)), check=False
    )
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr
    assert get(cluster, "inferencepool.cocoon.dev", "bad", "-n", namespace) is None


@pytest.mark.parametrize("name", ["1pool", "a" * 64, "pool.v1", "-pool"])
def test_names_that_cannot_become_a_service_are_refused_at_admission(
    cluster: LocalCluster, namespace: str, name: str
) -> None:
    """Before: `1pool` was accepted, its Service create failed (422) and the pool said Ready."""
    result = cluster.kubectl(
        "create", "-f", "-", input=json.dumps(pool(name, namespace)), check=False
    )
    assert result.returncode != 0
    assert "the name becomes the pool's Service name: a DNS-1035 label" in result.stderr
    accepted = cluster.kubectl(
        "create", "--dry-run=server", "-f", "-", input=json.dumps(pool("a" * 63, namespace)),
        check=False,
    )
    assert accepted.returncode == 0, accepted.stderr


def test_channel_names_that_cannot_become_a_label_are_refused_at_admission(
    cluster: LocalCluster, namespace: str
) -> None:
    channel = {
        "apiVersion": "cocoon.dev/v1alpha1",
        "kind": "PaymentChannel",
        "metadata": {"name": "c" * 64, "namespace": namespace},
        "spec": {"poolName": "pool", "payer": {"keySecretRef": {"name": "payer"}},
                 "deposit": "1000"},
    }
    result = cluster.kubectl(
        "create", "--dry-run=server", "-f", "-", input=json.dumps(channel), check=False
    )
    assert result.returncode != 0
    assert "the name becomes a label value" in result.stderr, result.stderr


def test_crds_are_established_with_short_names_and_category(cluster: LocalCluster) -> None:
    resources = cluster.kubectl("api-resources", "--api-group=cocoon.dev", "-o", "wide").stdout
    for short in ("cip", "an", "pch", "ap"):
        assert f" {short} " in resources, resources
    assert "cocoon" in resources
    explained = cluster.kubectl("explain", "inferencepools.cocoon.dev.spec.gpusPerReplica").stdout
    assert "nvidia.com/gpu requested by each replica" in explained


def test_defaults_are_applied_by_the_api_server(cluster: LocalCluster, namespace: str) -> None:
    minimal = pool("defaults", namespace)
    del minimal["spec"]["gpusPerReplica"], minimal["spec"]["teeTypes"]
    cluster.apply(minimal)
    stored = get(cluster, "inferencepool.cocoon.dev", "defaults", "-n", namespace)
    assert stored["spec"]["gpusPerReplica"] == 1
    assert stored["spec"]["teeTypes"] == ["tdx", "sev-snp"]
    assert stored["spec"]["triton"]["shmSize"] == "1Gi"
    assert stored["spec"]["meter"]["maxInFlight"] == 64


# -- placement, capacity and status -------------------------------------------------------------


def test_pool_runs_only_on_attested_nodes_and_says_why_replicas_pend(
    cluster: LocalCluster, operator: Operator, nodes: NodeFactory, namespace: str
) -> None:
    nodes.add(
        GpuNode("pl-attested", gpus=8, tee="sev-snp"),
        GpuNode("pl-unattested", gpus=8, tee="sev-snp"),
        GpuNode("pl-plain", gpus=8, tee=None, labels={"cocoon.dev/attested": "true"}),
    )
    nodes.attest("pl-attested")
    cluster.apply(pool("place", namespace, replicas=3))

    def one_ready_two_pending() -> list[dict[str, Any]] | None:
        pods = pods_of(cluster, namespace, "place")
        ready = [p for p in pods if p["spec"].get("nodeName")]
        return pods if len(pods) == 3 and len(ready) == 1 else None

    pods = eventually(one_ready_two_pending, what="1 placed, 2 pending pods")
    placed = {p["spec"].get("nodeName") for p in pods} - {None}
    assert placed == {"pl-attested"}  # never the unattested TDX node nor the TEE-less node

    def pending_reason() -> dict[str, Any] | None:
        cond = ready_condition(cluster, namespace, "place")
        return cond if cond.get("reason") == "InsufficientGPU" else None

    cond = eventually(pending_reason, what="InsufficientGPU on the pool")
    assert cond["status"] == "False"
    assert cond["message"].startswith("2 of 3 replicas pending: no attested node has 8 free GPU(s)")
    stored = get(cluster, "inferencepool.cocoon.dev", "place", "-n", namespace)
    assert stored["status"]["observedGeneration"] == stored["metadata"]["generation"]
    assert cond["observedGeneration"] == stored["metadata"]["generation"]

    # attesting a second node lets one more replica in; still one short
    nodes.attest("pl-unattested")
    eventually(
        lambda: (
            len({p["spec"].get("nodeName") for p in pods_of(cluster, namespace, "place")} - {None})
            == 2
        ),
        what="second replica placed once its node is attested",
    )
    placed = {p["spec"].get("nodeName") for p in pods_of(cluster, namespace, "place")} - {None}
    assert placed == {"pl-attested", "pl-unattested"}

    events = cluster.kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        "involvedObject.kind=InferencePool",
        "-o",
        "json",
    ).stdout
    reasons = {e["reason"] for e in json.loads(events)["items"]}
    assert "InsufficientGPU" in reasons


def test_no_attested_node_is_reported(
    cluster: LocalCluster, operator: Operator, nodes: NodeFactory, namespace: str
) -> None:
    nodes.add(GpuNode("na-snp", gpus=8, tee="sev-snp"))
    nodes.attest("na-snp")
    cluster.apply(pool("tdx-only", namespace, teeTypes=["tdx"]))

    def reason() -> dict[str, Any] | None:
        cond = ready_condition(cluster, namespace, "tdx-only")
        return cond if cond.get("reason") == "NoAttestedNodes" else None

    cond = eventually(reason, what="NoAttestedNodes")
    assert "no node is attested for TEE types tdx" in cond["message"]
    assert all(not p["spec"].get("nodeName") for p in pods_of(cluster, namespace, "tdx-only"))


def test_ready_pool_rolls_scales_and_is_garbage_collected(
    cluster: LocalCluster, operator: Operator, nodes: NodeFactory, namespace: str
) -> None:
    nodes.add(GpuNode("rl-0", gpus=8, tee="sev-snp"), GpuNode("rl-1", gpus=8, tee="sev-snp"))
    nodes.attest("rl-0")
    nodes.attest("rl-1")
    cluster.apply(pool("roll", namespace, replicas=1, gpusPerReplica=4))

    def ready() -> dict[str, Any] | None:
        cond = ready_condition(cluster, namespace, "roll")
        return cond if cond.get("status") == "True" else None

    cond = eventually(ready, what="pool Ready")
    assert cond["reason"] == "AllReplicasReady"
    stored = get(cluster, "inferencepool.cocoon.dev", "roll", "-n", namespace)
    assert stored["status"]["url"] == f"https://roll.{namespace}.svc.cluster.local:8000"
    assert stored["status"]["readyReplicas"] == 1
    assert not stored["metadata"].get("finalizers")  # nothing blocks deleting a pool

    # the Service exposes the meter's serving ports only (metrics are scraped on the pod)
    svc = get(cluster, "service", "roll", "-n", namespace)
    assert {p["targetPort"] for p in svc["spec"]["ports"]} == {"http", "grpc"}
    dep = get(cluster, "deployment", "roll", "-n", namespace)
    template = dep["spec"]["template"]["spec"]
    triton = next(c for c in template["containers"] if c["name"] == "triton")
    assert "--http-address=127.0.0.1" in triton["args"]
    assert "ports" not in triton
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}} in template[
        "volumes"
    ]

    # `kubectl get cip` shows Ready, replicas and URL
    table = cluster.kubectl("get", "cip", "-n", namespace).stdout
    header, row = table.splitlines()[:2]
    assert header.split()[:6] == ["NAME", "READY", "MODEL", "DESIRED", "REPLICAS", "URL"]
    assert row.split()[:6] == [
        "roll",
        "True",
        "add",
        "1",
        "1",
        f"https://roll.{namespace}.svc.cluster.local:8000",
    ]

    # scale up: 3 replicas of 4 GPUs fit on two 8-GPU nodes
    cluster.kubectl("scale", "inferencepool.cocoon.dev/roll", "-n", namespace, "--replicas=3")
    eventually(
        lambda: (
            ready_condition(cluster, namespace, "roll")
            .get("message", "")
            .startswith("3 of 3 replicas ready")
        ),
        what="3 ready replicas",
    )

    # a spec change rolls through to every pod
    cluster.kubectl(
        "patch",
        "inferencepool.cocoon.dev",
        "roll",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"triton": {"args": ["--log-verbose=1"]}}}),
    )

    def rolled() -> bool:
        pods = pods_of(cluster, namespace, "roll")
        return len(pods) == 3 and all(
            "--log-verbose=1"
            in next(c for c in p["spec"]["containers"] if c["name"] == "triton")["args"]
            and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p["status"].get("conditions", [])
            )
            for p in pods
        )

    eventually(rolled, timeout=120, what="rollout of the new args")
    eventually(ready, what="Ready again after the rollout")

    # deleting the pool removes its children (ownerReferences, kube-controller-manager's GC)
    cluster.kubectl("delete", "inferencepool.cocoon.dev", "roll", "-n", namespace)
    eventually(
        lambda: (
            get(cluster, "deployment", "roll", "-n", namespace) is None
            and get(cluster, "service", "roll", "-n", namespace) is None
        ),
        what="children garbage-collected",
    )


def test_operator_restart_converges_without_duplicates(
    cluster: LocalCluster, operator: Operator, nodes: NodeFactory, namespace: str
) -> None:
    nodes.add(GpuNode("rs-0", gpus=8, tee="sev-snp"))
    nodes.attest("rs-0")
    cluster.apply(pool("restart", namespace, gpusPerReplica=2, replicas=2))
    eventually(
        lambda: ready_condition(cluster, namespace, "restart").get("status") == "True",
        what="Ready before the restart",
    )
    operator.kill()
    # while the operator is down, the spec changes
    cluster.kubectl(
        "patch",
        "inferencepool.cocoon.dev",
        "restart",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"replicas": 3}}',
    )
    operator.start()
    eventually(
        lambda: (
            ready_condition(cluster, namespace, "restart")
            .get("message", "")
            .startswith("3 of 3 replicas ready")
        ),
        what="converged after restart",
    )
    deployments = get(cluster, "deployments", "-n", namespace)["items"]
    services = get(cluster, "services", "-n", namespace)["items"]
    assert [d["metadata"]["name"] for d in deployments] == ["restart"]
    assert [s["metadata"]["name"] for s in services] == ["restart"]


def test_operator_identity_is_least_privilege(cluster: LocalCluster, operator: Operator) -> None:
    def can(*args: str) -> bool:
        result = cluster.kubectl(
            "auth", "can-i", *args, kubeconfig=operator.kubeconfig, check=False
        )
        return result.stdout.strip() == "yes"

    assert can("patch", "deployments", "-n", "default")
    assert can("patch", "inferencepools.cocoon.dev/status", "-n", "default")
    assert not can("get", "secrets", "-n", "kube-system")
    assert not can("create", "clusterrolebindings")
    assert not can("delete", "nodes")
    assert not can("create", "pods", "-n", "default")
    whoami = cluster.kubectl("auth", "whoami", "-o", "json", kubeconfig=operator.kubeconfig).stdout
    assert (
        json.loads(whoami)["status"]["userInfo"]["username"]
        == "system:serviceaccount:cocoon-system:cocoon-operator"
    )


def test_invalid_spec_that_passes_the_schema_is_reported(
    cluster: LocalCluster, operator: Operator, namespace: str
) -> None:
    body = pool(
        "cm-missing",
        namespace,
        model={"name": "add", "repository": {"configMap": {"name": "absent"}}},
    )
    cluster.apply(body)

    def missing() -> dict[str, Any] | None:
        cond = ready_condition(cluster, namespace, "cm-missing")
        return cond if cond.get("reason") == "ModelRepositoryMissing" else None

    cond = eventually(missing, what="ModelRepositoryMissing")
    assert f"ConfigMap {namespace}/absent" in cond["message"]
    assert get(cluster, "deployment", "cm-missing", "-n", namespace) is None
    # creating it lets the operator proceed on its own
    cluster.kubectl(
        "create",
        "configmap",
        "absent",
        "-n",
        namespace,
        '--from-literal=add__config.pbtxt=name: "add"',
    )
    dep = eventually(
        lambda: get(cluster, "deployment", "cm-missing", "-n", namespace),
        what="deployment once the ConfigMap exists",
    )
    volume = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "models")
    assert volume["configMap"]["items"] == [
        {"key": "add__config.pbtxt", "path": "repository/add/config.pbtxt"}
    ]
