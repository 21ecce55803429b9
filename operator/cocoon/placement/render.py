"""Pure rendering of an InferencePool's children: the Deployment and the Service.

Everything a pool pod needs is decided here, from the pool and the operator's settings alone,
so the same function serves the controller, the tests and the local stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cocoon.api.inferencepool import InferencePoolSpec
from cocoon.meter import sidecar
from cocoon.placement.labels import (
    ATTESTED_LABEL,
    GPU_RESOURCE,
    MANAGED_BY,
    OPERATOR_NAME,
    POOL_LABEL,
    TEE_LABEL,
)

Obj = dict[str, Any]
MODEL_MOUNT = "/models"
SHM_MOUNT = "/dev/shm"  # noqa: S108 - a path inside the pod, not a temp file
# Triton's root filesystem is read-only; what it (and its python backend's stubs) may write to
# outside /dev/shm goes to a small emptyDir at /tmp.
TRITON_TMP = "/tmp"  # noqa: S108 - a path inside the pod, not a temp file
TRITON_TMP_SIZE = "64Mi"
TRITON_UID = 1000  # the uid NVIDIA's image and images/triton.Dockerfile run Triton as
CONFIGMAP_PATH_SEPARATOR = "__"
# A ConfigMap volume's root also holds the kubelet's `..data` and `..<timestamp>` directories,
# which Triton would try to load as models: its models are projected one level down instead.
CONFIGMAP_REPOSITORY_DIR = "repository"


@dataclass(frozen=True)
class Settings:
    """Operator-wide settings (Helm values) that every pool shares."""

    meter_image: str = "ghcr.io/cocoon-k8s/cocoon:0.1.0"
    meter_pull_policy: str = "IfNotPresent"
    meter_socket_dir: str = "/var/run/cocoon/meter"
    operator_url: str = "https://cocoon-operator.cocoon-system.svc:8443"
    operator_ca_pem: str | None = None
    meter_resources: dict[str, Any] | None = None
    cluster_domain: str = "cluster.local"


@dataclass(frozen=True)
class PoolRef:
    name: str
    namespace: str
    uid: str


def common_labels(pool: PoolRef) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "cocoon-pool",
        "app.kubernetes.io/instance": pool.name,
        MANAGED_BY: OPERATOR_NAME,
        POOL_LABEL: pool.name,
    }


def selector(pool: PoolRef) -> dict[str, str]:
    return {POOL_LABEL: pool.name}


def selector_string(pool: PoolRef) -> str:
    return ",".join(f"{k}={v}" for k, v in selector(pool).items())


def owner_reference(pool: PoolRef) -> Obj:
    return {
        "apiVersion": "cocoon.dev/v1alpha1",
        "kind": "InferencePool",
        "name": pool.name,
        "uid": pool.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def url(pool: PoolRef, settings: Settings) -> str:
    host = f"{pool.name}.{pool.namespace}.svc.{settings.cluster_domain}"
    return f"https://{host}:{sidecar.HTTP_PORT}"


def node_affinity(spec: InferencePoolSpec) -> Obj:
    """Only attested nodes of an allowed TEE type; the scheduler enforces it, not the operator."""
    return {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {
                    "matchExpressions": [
                        {"key": ATTESTED_LABEL, "operator": "In", "values": ["true"]},
                        {
                            "key": TEE_LABEL,
                            "operator": "In",
                            "values": sorted(str(t) for t in spec.tee_types),
                        },
                    ]
                }
            ]
        }
    }


def model_volume(spec: InferencePoolSpec, pool: PoolRef, configmap_keys: list[str]) -> Obj:
    """ConfigMap keys cannot hold '/': `add__1__model.py` is mounted as `add/1/model.py`."""
    source = spec.model.repository
    if source.config_map is not None:
        items = [
            {
                "key": key,
                "path": f"{CONFIGMAP_REPOSITORY_DIR}/{key.replace(CONFIGMAP_PATH_SEPARATOR, '/')}",
            }
            for key in sorted(configmap_keys)
        ]
        cm: Obj = {"name": source.config_map.name}
        if items:
            cm["items"] = items
        return {"name": "models", "configMap": cm}
    if source.pvc is not None:
        return {
            "name": "models",
            "persistentVolumeClaim": {"claimName": source.pvc.claim_name, "readOnly": True},
        }
    return {"name": "models", "emptyDir": {}}


def model_repository(spec: InferencePoolSpec) -> str:
    """Where Triton finds the models inside the pod."""
    if spec.model.repository.config_map is not None:
        return f"{MODEL_MOUNT}/{CONFIGMAP_REPOSITORY_DIR}"
    return MODEL_MOUNT


def triton_container(spec: InferencePoolSpec) -> Obj:
    resources: Obj = {
        "requests": {"cpu": spec.triton.resources.cpu, "memory": spec.triton.resources.memory},
        "limits": {"cpu": spec.triton.resources.cpu, "memory": spec.triton.resources.memory},
    }
    if spec.gpus_per_replica:
        for bucket in ("requests", "limits"):
            resources[bucket][GPU_RESOURCE] = str(spec.gpus_per_replica)
    mount: Obj = {"name": "models", "mountPath": MODEL_MOUNT, "readOnly": True}
    if spec.model.repository.pvc is not None and spec.model.repository.pvc.sub_path:
        mount["subPath"] = spec.model.repository.pvc.sub_path
    image = spec.triton.image
    return {
        "name": "triton",
        "image": f"{image.repository}:{image.tag}",
        "imagePullPolicy": str(image.pull_policy),
        "command": ["tritonserver"],
        "args": [
            f"--model-repository={model_repository(spec)}",
            *sidecar.triton_listen_args(),
            "--strict-readiness=true",
            "--exit-timeout-secs=5",
            *spec.triton.args,
        ],
        "resources": resources,
        "volumeMounts": [
            mount,
            {"name": "dshm", "mountPath": SHM_MOUNT},
            {"name": "triton-tmp", "mountPath": TRITON_TMP},
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "runAsUser": TRITON_UID,
            "runAsGroup": TRITON_UID,
        },
    }


def init_containers(spec: InferencePoolSpec) -> list[Obj]:
    source = spec.model.repository.init_container
    if source is None:
        return []
    return [
        {
            "name": "fetch-models",
            "image": f"{source.image.repository}:{source.image.tag}",
            "imagePullPolicy": str(source.image.pull_policy),
            "command": source.command,
            "volumeMounts": [{"name": "models", "mountPath": MODEL_MOUNT}],
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "runAsNonRoot": True,
                "runAsUser": TRITON_UID,
            },
        }
    ]


def meter_container(spec: InferencePoolSpec, pool: PoolRef, settings: Settings) -> Obj:
    """The meter sidecar as the meter package renders it, the pod's only listening container."""
    container = sidecar.sidecar_spec(
        image=settings.meter_image,
        pool=f"{pool.namespace}/{pool.name}",
        price=spec.price,
        models=[spec.model.name],
        operator_url=settings.operator_url,
        journal_volume="meter-journal",
        pod_isolation=bool(spec.runtime_class_name),
        operator_ca_pem=settings.operator_ca_pem,
        reserve_output_tokens=spec.meter.max_output_tokens,
        max_in_flight=spec.meter.max_in_flight,
        limits=spec.meter.limits.meter_limits(),
        resources=settings.meter_resources,
        tokenizer=spec.meter.tokenizer,
    )
    container["imagePullPolicy"] = settings.meter_pull_policy
    return container


def deployment(
    spec: InferencePoolSpec,
    pool: PoolRef,
    settings: Settings,
    configmap_keys: list[str] | None = None,
) -> Obj:
    """The pool's Deployment: Triton on loopback, the meter in front of it."""
    labels = common_labels(pool)
    pod_spec: Obj = {
        "affinity": {"nodeAffinity": node_affinity(spec)},
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "initContainers": init_containers(spec),
        "containers": [triton_container(spec), meter_container(spec, pool, settings)],
        "volumes": [
            model_volume(spec, pool, configmap_keys or []),
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.triton.shm_size}},
            {"name": "triton-tmp", "emptyDir": {"sizeLimit": TRITON_TMP_SIZE}},
            {"name": "meter-journal", "emptyDir": {}},
            {
                "name": "meter-token",
                "projected": {
                    "sources": [
                        {
                            "serviceAccountToken": {
                                "path": sidecar.TOKEN_FILE,
                                "audience": sidecar.TOKEN_AUDIENCE,
                                "expirationSeconds": 3600,
                            }
                        }
                    ]
                },
            },
        ],
    }
    if not spec.runtime_class_name:
        # node isolation: the agent's evidence socket (evidence only, never a key)
        pod_spec["volumes"].append(
            {
                "name": "meter-socket",
                "hostPath": {"path": settings.meter_socket_dir, "type": "Directory"},
            }
        )
    if spec.runtime_class_name:
        pod_spec["runtimeClassName"] = spec.runtime_class_name
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": pool.name,
            "namespace": pool.namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(pool)],
        },
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": selector(pool)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {
                    "maxSurge": 0 if spec.gpus_per_replica else 1,
                    "maxUnavailable": 1,
                },
            },
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def service(pool: PoolRef) -> Obj:
    """Only the meter's serving ports. Triton's are bound to loopback; the meter's admin port
    (metrics, liveness) is scraped on the pod (the chart's PodMonitor), never through the
    Service every tenant can reach."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": pool.name,
            "namespace": pool.namespace,
            "labels": common_labels(pool),
            "ownerReferences": [owner_reference(pool)],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector(pool),
            "ports": [
                {
                    "name": "http",
                    "port": sidecar.HTTP_PORT,
                    "targetPort": "http",
                    "protocol": "TCP",
                    "appProtocol": "http",
                },
                {
                    "name": "grpc",
                    "port": sidecar.GRPC_PORT,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "kubernetes.io/h2c",
                },
            ],
        },
    }
