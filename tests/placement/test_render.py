"""What a pool pod looks like: attested-only placement, Triton on loopback, meter-only Service."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from cocoon.api.inferencepool import InferencePoolSpec
from cocoon.meter import sidecar
from cocoon.placement import render

POOL = render.PoolRef(name="chat", namespace="team-a", uid="u-1")
SETTINGS = render.Settings()


def spec(**kw: Any) -> InferencePoolSpec:
    base: dict[str, Any] = {"model": {"name": "llm", "repository": {"pvc": {"claimName": "m"}}}}
    base.update(kw)
    return InferencePoolSpec.model_validate(base)


def deployment(s: InferencePoolSpec, keys: list[str] | None = None) -> dict[str, Any]:
    return render.deployment(s, POOL, SETTINGS, keys)


def container(dep: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def test_affinity_requires_attested_nodes_of_allowed_tee_types() -> None:
    dep = deployment(spec(teeTypes=["tdx"]))
    terms = dep["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert terms == [
        {
            "matchExpressions": [
                {"key": "cocoon.dev/attested", "operator": "In", "values": ["true"]},
                {"key": "cocoon.dev/tee", "operator": "In", "values": ["tdx"]},
            ]
        }
    ]
    assert "tolerations" not in dep["spec"]["template"]["spec"]


def test_triton_listens_on_loopback_and_only_the_meter_is_exposed() -> None:
    dep = deployment(spec())
    triton = container(dep, "triton")
    assert {
        "--http-address=127.0.0.1",
        "--grpc-address=127.0.0.1",
        "--metrics-address=127.0.0.1",
    } <= set(triton["args"])
    assert "ports" not in triton
    svc = render.service(POOL)
    meter_ports = {p["name"]: p["containerPort"] for p in container(dep, "meter")["ports"]}
    assert svc["spec"]["selector"] == {"cocoon.dev/pool": "chat"}
    # serving ports only: metrics and liveness (the admin port) are scraped on the pod
    assert meter_ports["metrics"] == sidecar.ADMIN_PORT
    assert {p["targetPort"] for p in svc["spec"]["ports"]} == {"http", "grpc"}
    assert sidecar.ADMIN_PORT not in {p["port"] for p in svc["spec"]["ports"]}


@pytest.mark.parametrize(("gpus", "limit", "surge"), [(2, "2", 0), (0, None, 1)])
def test_gpu_requests_and_rollout_strategy(gpus: int, limit: str | None, surge: int) -> None:
    dep = deployment(spec(gpusPerReplica=gpus))
    limits = container(dep, "triton")["resources"]["limits"]
    assert limits.get("nvidia.com/gpu") == limit
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == surge


def test_shm_is_memory_backed_with_the_pool_size() -> None:
    dep = deployment(spec(triton={"shmSize": "2Gi"}))
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["dshm"] == {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}}
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container(dep, "triton")["volumeMounts"]


@pytest.mark.parametrize(
    ("repository", "keys", "volume", "triton_repository"),
    [
        (
            {"pvc": {"claimName": "m", "subPath": "v1"}},
            None,
            {"name": "models", "persistentVolumeClaim": {"claimName": "m", "readOnly": True}},
            "/models",
        ),
        (
            {"configMap": {"name": "cm"}},
            ["add__1__model.py", "add__config.pbtxt"],
            {
                "name": "models",
                "configMap": {
                    "name": "cm",
                    "items": [
                        {"key": "add__1__model.py", "path": "repository/add/1/model.py"},
                        {"key": "add__config.pbtxt", "path": "repository/add/config.pbtxt"},
                    ],
                },
            },
            # below the mount's root, away from the kubelet's `..data` directories
            "/models/repository",
        ),
        (
            {"initContainer": {"image": {"repository": "r", "tag": "t"}, "command": ["fetch"]}},
            None,
            {"name": "models", "emptyDir": {}},
            "/models",
        ),
    ],
)
def test_model_repository_sources(
    repository: dict[str, Any],
    keys: list[str] | None,
    volume: dict[str, Any],
    triton_repository: str,
) -> None:
    s = spec(model={"name": "add", "repository": repository})
    dep = deployment(s, keys)
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["models"] == volume
    assert f"--model-repository={triton_repository}" in container(dep, "triton")["args"]
    inits = dep["spec"]["template"]["spec"]["initContainers"]
    assert [c["name"] for c in inits] == (["fetch-models"] if "initContainer" in repository else [])


def test_runtime_class_owner_and_labels() -> None:
    dep = deployment(spec(runtimeClassName="kata-qemu-tdx"))
    assert dep["spec"]["template"]["spec"]["runtimeClassName"] == "kata-qemu-tdx"
    owner = dep["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("InferencePool", "u-1", True)
    assert dep["spec"]["selector"]["matchLabels"] == {"cocoon.dev/pool": "chat"}
    assert dep["spec"]["template"]["metadata"]["labels"]["cocoon.dev/pool"] == "chat"
    assert render.url(POOL, SETTINGS) == "https://chat.team-a.svc.cluster.local:8000"


def test_pods_do_not_get_a_service_account_token() -> None:
    pod = deployment(spec())["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    for c in pod["containers"]:
        assert c["securityContext"]["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize("runtime_class", [None, "kata-qemu-tdx"])
def test_no_key_material_reaches_a_pool_pod(runtime_class: str | None) -> None:
    """The meter's keys live in its memory: no Secret, no key file, no other pod's or the node's
    key is mounted. Node isolation mounts only the agent's evidence socket directory."""
    extra = {"runtimeClassName": runtime_class} if runtime_class else {}
    pod = deployment(spec(**extra))["spec"]["template"]["spec"]
    kinds = {next(k for k in v if k != "name") for v in pod["volumes"]}
    assert "secret" not in kinds
    host_paths = [v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v]
    assert host_paths == ([] if runtime_class else ["/var/run/cocoon/meter"])
    meter = next(c for c in pod["containers"] if c["name"] == "meter")
    args = " ".join(meter["args"])
    assert "key" not in args.replace("--token-file", "")
    proof = "--configfs-tsm" if runtime_class else "--evidence-socket=/var/run/cocoon/meter/"
    assert proof in args
    (token,) = [v for v in pod["volumes"] if v["name"] == "meter-token"]
    projected = token["projected"]["sources"][0]["serviceAccountToken"]
    assert projected["audience"] == "cocoon-operator"
    assert projected["expirationSeconds"] <= 3600
    assert meter["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    triton = next(c for c in pod["containers"] if c["name"] == "triton")
    assert not triton.get("volumeMounts", []) or all(
        m["name"] in ("models", "dshm", "triton-tmp") for m in triton["volumeMounts"]
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("readOnlyRootFilesystem", True),
        ("runAsNonRoot", True),
        ("runAsUser", 1000),
        ("runAsGroup", 1000),
        ("allowPrivilegeEscalation", False),
        ("capabilities", {"drop": ["ALL"]}),
    ],
)
def test_triton_runs_non_root_on_a_read_only_root(field: str, value: object) -> None:
    for s in (spec(), spec(runtimeClassName="kata-qemu-tdx"), spec(gpusPerReplica=2)):
        assert container(deployment(s), "triton")["securityContext"][field] == value


def test_triton_writes_only_to_memory_and_a_bounded_tmp() -> None:
    """With a read-only root, /dev/shm and /tmp are Triton's only writable paths, both emptyDirs
    with a size limit; the model repository stays read-only."""
    dep = deployment(spec())
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in container(dep, "triton")["volumeMounts"]}
    writable = {path for path, m in mounts.items() if not m.get("readOnly")}
    assert writable == {"/dev/shm", "/tmp"}
    for path in writable:
        source = volumes[mounts[path]["name"]]
        assert set(source) == {"name", "emptyDir"}
        assert source["emptyDir"]["sizeLimit"]
    assert mounts["/models"]["readOnly"] is True


def test_pool_tokenizer_reaches_the_meter_from_the_model_volume() -> None:
    pod = deployment(spec(meter={"tokenizer": "add/tokenizer.json"}))["spec"]["template"]["spec"]
    meter = next(c for c in pod["containers"] if c["name"] == "meter")
    assert "--tokenizer=/models/add/tokenizer.json" in meter["args"]
    mount = next(m for m in meter["volumeMounts"] if m["name"] == "models")
    assert mount["readOnly"] is True
    assert "models" in {v["name"] for v in pod["volumes"]}


@pytest.mark.parametrize("bad", ["../etc/passwd", "/abs/tokenizer.json", "a/../b", "a//b", ""])
def test_pool_tokenizer_path_stays_inside_the_repository(bad: str) -> None:
    with pytest.raises(ValidationError):
        spec(meter={"tokenizer": bad})
