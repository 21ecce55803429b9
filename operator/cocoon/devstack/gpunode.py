"""The fake confidential GPU nodes kwok runs: the Node object a real one would register."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"


@dataclass
class GpuNode:
    """A kwok fake node with GPUs; `tee` sets our discovery label."""

    name: str
    gpus: int = 8
    tee: str | None = "sev-snp"
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)

    def manifest(self) -> dict[str, Any]:
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "type": "kwok",
            **({"cocoon.dev/tee": self.tee} if self.tee else {}),
            **(
                {
                    "nvidia.com/gpu.present": "true",
                    "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
                }
                if self.gpus
                else {}
            ),
            **self.labels,
        }
        capacity = {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": str(self.gpus)}
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": labels,
                "annotations": {FAKE_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            },
            "spec": {"taints": self.taints},
            "status": {"capacity": capacity, "allocatable": capacity},
        }
