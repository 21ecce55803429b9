"""The binaries the local stack runs (control plane, kwok, helm, the real node's), and the source
checkout they and the chart come from.

`e2e/build-control-plane.sh` builds them from the Go module proxy into a cache outside the
repository, keyed by the versions below: a version bump builds afresh, a complete cache is reused.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

K8S_VERSION = "v1.34.4"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"
HELM_VERSION = "v3.21.4"
BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "helm",
    # the real node (cocoon.devstack.node)
    "kubelet",
    "kube-proxy",
    "coredns",
    "pause",
)


def cache_dir() -> Path:
    root = os.environ.get("COCOON_E2E_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cocoon-e2e"
    )
    return Path(root) / (
        f"k8s-{K8S_VERSION}-etcd-{ETCD_VERSION}-kwok-{KWOK_VERSION}-helm-{HELM_VERSION}"
    )


def repo_root() -> Path:
    """The source checkout this package runs from: the local stack needs its chart and CRDs."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "e2e" / "build-control-plane.sh").exists() and (parent / "charts").is_dir():
            return parent
    raise FileNotFoundError("not a source checkout: the local stack needs the repository")


def build_script() -> Path:
    return repo_root() / "e2e" / "build-control-plane.sh"


def ensure_binaries() -> Path:
    """Build whatever is missing (minutes the first time, seconds after) and return bin/."""
    bin_dir = cache_dir() / "bin"
    if all((bin_dir / b).exists() for b in BINARIES) and (stages_file()).exists():
        return bin_dir
    env = {
        **os.environ,
        "K8S_VERSION": K8S_VERSION,
        "ETCD_VERSION": ETCD_VERSION,
        "KWOK_VERSION": KWOK_VERSION,
        "HELM_VERSION": HELM_VERSION,
    }
    out = subprocess.run(
        ["bash", str(build_script())], check=True, env=env, stdout=subprocess.PIPE, text=True
    )
    return Path(out.stdout.strip().splitlines()[-1])


def stages_file() -> Path:
    return cache_dir() / "kwok-stages" / "stages.yaml"
