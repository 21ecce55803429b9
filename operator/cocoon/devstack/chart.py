"""The Helm chart installed for real on a `RealNode`, with the images `images/build.sh` made:
what a provider runs, with stock values plus the payout address and `simulated=true`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from cocoon.devstack.binaries import repo_root
from cocoon.devstack.cluster import LocalCluster

OPERATOR_NAMESPACE = "cocoon-system"
RELEASE = "cocoon"
KUBE_VERSION = "1.34.4"


def ensure_images() -> list[Path]:
    """Build what changed (seconds when nothing did) and return the image archives."""
    out = subprocess.run(
        ["bash", str(repo_root() / "images" / "build.sh")],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    directory = Path(out.stdout.strip().splitlines()[-1])
    return sorted(directory.glob("*.tar"))


def install(
    cluster: LocalCluster, *, simulated_dir: Path, payout: str, extra: tuple[str, ...] = ()
) -> None:
    """`helm install` with stock values, after the simulated TEE's Secret it expects."""
    cluster.kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
    secret = cluster.kubectl(
        "create", "secret", "generic", "cocoon-simulated-tee", "-n", OPERATOR_NAMESPACE,
        f"--from-file={simulated_dir}", "--dry-run=client", "-o", "json",
    ).stdout  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=secret)
    cluster.helm(*helm_args("install", payout), *extra)


def upgrade(cluster: LocalCluster, *, payout: str, extra: tuple[str, ...] = ()) -> None:
    cluster.helm(*helm_args("upgrade", payout), *extra)


def helm_args(verb: str, payout: str) -> list[str]:
    return [
        verb, RELEASE, str(repo_root() / "charts" / "cocoon"),
        "--namespace", OPERATOR_NAMESPACE,
        "--set", "simulated=true",
        "--set", f"payout.address={payout}",
        "--wait", "--timeout", "5m",
    ]  # fmt: skip


def ready_pods(cluster: LocalCluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    """Pods that are Running with every readiness probe passing, not on their way out."""
    out = cluster.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json", check=False)
    if out.returncode != 0:
        return []
    ready = []
    for pod in json.loads(out.stdout)["items"]:
        conditions = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
        if conditions.get("Ready") == "True" and not pod["metadata"].get("deletionTimestamp"):
            ready.append(pod)
    return ready
