"""A pool served by real pods on a `RealNode` with the chart installed: the InferencePool with the
Triton image `images/build.sh` made, a funded PaymentChannel on the chart's chain emulator, and
paid calls made with the project's own verified client (`cocoon call`) from inside the node's
network namespace, through the pool's Service, as an in-cluster caller would."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cocoon import keys
from cocoon.agent.simulated import SimulatedTee
from cocoon.client import ReceiptStore
from cocoon.devstack import chart
from cocoon.devstack.agents import simulated_policy, simulated_tee
from cocoon.devstack.calls import MODEL
from cocoon.devstack.cluster import LocalCluster
from cocoon.devstack.node import RealNode
from cocoon.devstack.process import wait_for
from cocoon.devstack.simstack import PRICE
from cocoon.devstack.triton import configmap_data
from cocoon.meter import sidecar
from cocoon.ton import emulator, keyfile
from cocoon.ton.units import TON
from cocoon.ton.wallet import wallet_address

TRITON_IMAGE = "ghcr.io/cocoon-k8s/cocoon-triton"
EMULATOR_PORT = 8081  # the chart's chainEmulator.port


def attested_label(cluster: LocalCluster, node: str) -> str | None:
    out = cluster.kubectl("get", "node", node, "-o", "json", check=False)
    if out.returncode != 0:
        return None
    value = json.loads(out.stdout)["metadata"].get("labels", {}).get("cocoon.dev/attested")
    return str(value) if value is not None else None


def install_attested(cluster: LocalCluster, node: RealNode, payout: str) -> Path:
    """The chart with stock values and the simulated TEE; returns once the agent pod got the
    real node attested. Returns the simulated TEE's folder (its roots are the caller's too)."""
    simulated = simulated_tee(cluster.workdir / "sim")
    chart.install(cluster, simulated_dir=simulated, payout=payout)
    cluster.apply(simulated_policy(simulated, gpus=1))
    wait_for(
        lambda: attested_label(cluster, node.name) == "true",
        timeout=180,
        what="the real node attested by the agent pod",
    )
    return simulated


def service_ip(cluster: LocalCluster, namespace: str, name: str) -> str:
    out = cluster.kubectl("get", "service", name, "-n", namespace, "-o", "json")
    return str(json.loads(out.stdout)["spec"]["clusterIP"])


def status(cluster: LocalCluster, kind: str, namespace: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return dict(json.loads(out.stdout).get("status") or {}) if out.returncode == 0 else {}


def create_pool(cluster: LocalCluster, namespace: str, name: str, *, version: str) -> None:
    """The demo's model from a ConfigMap, one replica holding the node's one (fake) GPU; its
    channels pay the chart's payout address."""
    cluster.kubectl("create", "namespace", namespace, check=False)
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"{name}-models", "namespace": namespace},
            "data": configmap_data(MODEL),
        },
        {
            "apiVersion": "cocoon.dev/v1alpha1",
            "kind": "InferencePool",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "model": {"name": MODEL, "repository": {"configMap": {"name": f"{name}-models"}}},
                "replicas": 1,
                "gpusPerReplica": 1,
                "teeTypes": ["sev-snp"],
                "price": PRICE,
                "meter": {"maxOutputTokens": 64},
                "triton": {
                    "image": {"repository": TRITON_IMAGE, "tag": version, "pullPolicy": "Never"},
                    "resources": {"cpu": "1", "memory": "1Gi"},
                    "shmSize": "256Mi",
                },
            },
        },
    )


def ready_pool_pods(cluster: LocalCluster, namespace: str, name: str) -> list[dict[str, Any]]:
    return chart.ready_pods(cluster, namespace, f"cocoon.dev/pool={name}")


def chain_url(cluster: LocalCluster, node: RealNode) -> str:
    """A host URL of the chart's chain emulator (its Service, through a forward into the node)."""
    chain = service_ip(cluster, chart.OPERATOR_NAMESPACE, f"{chart.RELEASE}-chain-emulator")
    return f"http://127.0.0.1:{node.forward(chain, EMULATOR_PORT)}"


def open_channel(
    cluster: LocalCluster,
    node: RealNode,
    namespace: str,
    pool: str,
    name: str,
    *,
    claim_threshold: int = 10 * TON,
) -> str:
    """Fund a payer on the chart's emulator, open a channel on it; the caller's credential."""
    emulator_url = chain_url(cluster, node)
    payer_key = keys.generate()
    payer = wallet_address(keys.public_bytes(payer_key))
    asyncio.run(emulator.faucet(emulator_url, payer, 10 * TON))
    cluster.kubectl(
        "create", "rolebinding", "cocoon-operator-secrets", "-n", namespace,
        f"--clusterrole={chart.RELEASE}-operator-secrets",
        f"--serviceaccount={chart.OPERATOR_NAMESPACE}:cocoon-operator", check=False,
    )  # fmt: skip
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{name}-payer", "namespace": namespace},
            "data": {"key": base64.b64encode(keyfile.to_json(payer_key).encode()).decode()},
        },
        {
            "apiVersion": "cocoon.dev/v1alpha1",
            "kind": "PaymentChannel",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "poolName": pool,
                "payer": {"keySecretRef": {"name": f"{name}-payer"}},
                "deposit": str(TON),
                "creditWindow": str(TON),
                "claim": {"threshold": str(claim_threshold), "intervalSeconds": 3600},
                "closeDelaySeconds": 60,
            },
        },
    )
    wait_for(
        lambda: (
            status(cluster, "paymentchannel.cocoon.dev", namespace, name).get("state") == "Open"
        ),
        timeout=180,
        what=f"channel {name} open",
    )
    secret = status_secret(cluster, namespace, name)
    return base64.b64decode(secret["data"]["token"]).decode()


def status_secret(cluster: LocalCluster, namespace: str, channel: str) -> dict[str, Any]:
    name = status(cluster, "paymentchannel.cocoon.dev", namespace, channel)["credentialSecret"]
    out = cluster.kubectl("get", "secret", name, "-n", namespace, "-o", "json")
    return dict(json.loads(out.stdout))


@dataclass
class Caller:
    """`cocoon call` run inside the node's network namespace, keeping its receipts."""

    node: RealNode
    workdir: Path
    credential: str

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)

    @property
    def receipts(self) -> Path:
        return self.workdir / "receipts.db"

    def policy(self, simulated_dir: Path) -> None:
        """The caller's own policy: the simulated TEE's roots and measurement, one GPU."""
        spec = SimulatedTee.load(simulated_dir).policy_document("caller", gpus=1)["spec"]
        (self.workdir / "policy.yaml").write_text(yaml.safe_dump(spec))

    def call(self, address: str, text: str) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "COCOON_CREDENTIAL": self.credential,
            "COCOON_RECEIPTS": str(self.receipts),
        }
        return subprocess.run(
            [*self.node.sandbox.enter(), sys.executable, "-m", "cocoon.cli", "call",
             f"https://{address}:{sidecar.HTTP_PORT}", "--policy",
             str(self.workdir / "policy.yaml"), "--model", MODEL, "--endpoint",
             "generate_stream", "--text", text],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip

    def paid(self, address: str, text: str, *, timeout: float = 90) -> None:
        """One served call; a new channel or a new meter is refused until its credit poll."""
        last: list[subprocess.CompletedProcess[str]] = []

        def served() -> bool:
            last.append(self.call(address, text))
            return last[-1].returncode == 0

        try:
            wait_for(served, timeout=timeout, what="a paid call served", interval=1)
        except TimeoutError as exc:
            raise AssertionError(last[-1].stdout + last[-1].stderr if last else "") from exc

    def costs(self) -> list[tuple[str, int]]:
        """(meter key, cost) of every receipt kept, in order."""
        store = ReceiptStore(self.receipts)
        try:
            return [
                (held.receipt.meter_public_key, int(held.receipt.cost_nanoton))
                for held in store.list()
            ]
        finally:
            store.close()
