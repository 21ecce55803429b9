"""The local stack the paid-inference story runs on: the control plane, the chain emulator, the
operator under the chart's ServiceAccount and RBAC, attested kwok GPU nodes, the demo pool with
real Triton and meter processes standing in for its pod, and the caller's own verified client.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import yaml

from cocoon import keys
from cocoon.agent.simulated import SimulatedTee
from cocoon.client import ReceiptStore, VerifiedTransport, Verifier
from cocoon.client import policy as client_policy
from cocoon.devstack import money
from cocoon.devstack.agents import Agents, simulated_policy, simulated_tee
from cocoon.devstack.binaries import ensure_binaries
from cocoon.devstack.calls import MODEL
from cocoon.devstack.cluster import LocalCluster
from cocoon.devstack.gpunode import GpuNode
from cocoon.devstack.podstandin import PodStandIn, stand_in
from cocoon.devstack.process import Supervisor, wait_for
from cocoon.devstack.stack import Operator, install_crds, install_security, operator_kubeconfig
from cocoon.devstack.triton import configmap_data
from cocoon.ton import emulator, keyfile
from cocoon.ton.tvm import Address, raw
from cocoon.ton.units import TON
from cocoon.ton.wallet import wallet_address

NAMESPACE = "demo"
POOL = "chat"
PRICE = {"perRequest": str(TON // 1000), "perOutputToken": str(TON // 5000)}  # 1 and 0.2 mTON
Say = Callable[[str], None]


def quiet(_: str) -> None:
    return None


class SimStack:
    """The stack with its nodes attested and, once created, the demo pool; stop() tears it all
    down."""

    def __init__(self, workdir: Path | None = None, say: Say = quiet) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="cocoon-demo-"))
        self.say = say
        self.cluster = LocalCluster(self.workdir / "cluster", ensure_binaries())
        self.supervisor = Supervisor(self.workdir / "logs")
        self.chain: emulator.Emulator | None = None
        self.operator: Operator | None = None
        self.agents: Agents | None = None
        self.pods: list[PodStandIn] = []
        self.http: httpx2.Client | None = None
        self.receipts: ReceiptStore | None = None
        self.verifier: Verifier | None = None
        # the provider's payout wallet: the operator's payout address, never a tenant's choice
        self.payee = wallet_address(keys.public_bytes(keys.generate()))

    # -- the stack -----------------------------------------------------------------------------

    def start(self, nodes: int = 2) -> list[str]:
        self.say(
            "starting the control plane (etcd, kube-apiserver with RBAC, controller-manager,"
            " scheduler, kwok)"
        )
        self.cluster.start()
        install_crds(self.cluster)
        install_security(self.cluster)
        self.say("starting the TON chain emulator (@ton/sandbox, the real TVM)")
        self.chain = emulator.start()
        self.say("starting the operator under the Helm chart's ServiceAccount and RBAC")
        self.operator = Operator(
            self.cluster,
            operator_kubeconfig(self.cluster),
            env={"COCOON_CHAIN_URL": self.chain.url, "COCOON_PAYOUT_ADDRESS": raw(self.payee)},
        )
        self.operator.start()
        simulated = simulated_tee(self.workdir / "simulated-tee")
        self.cluster.apply(simulated_policy(simulated, gpus=1))
        self.agents = Agents(self.cluster, self.operator, simulated)
        names = [f"gpu-node-{i}" for i in range(nodes)]
        self.cluster.add_nodes(*(GpuNode(n, gpus=1, tee="sev-snp") for n in names))
        self.say(
            f"{nodes} confidential GPU nodes joined; their agents answer the operator's "
            "challenges with simulated SEV-SNP and NVIDIA evidence"
        )
        for name in names:
            self.agents.start(name, "--gpus", "1")
        for name in names:
            wait_for(lambda n=name: self._attested(n), timeout=60, what=f"{name} attested")  # type: ignore[misc]
        self.say(f"all {nodes} nodes verified: labelled cocoon.dev/attested=true, taints lifted")
        self._caller(simulated)
        return names

    def _caller(self, simulated: Path) -> None:
        """The developer's own client: a policy file it owns (the simulated TEE's roots, the
        measurement it pins, one GPU) and the verified transport that keeps every receipt."""
        spec = SimulatedTee.load(simulated).policy_document("caller", gpus=1)["spec"]
        policy_file = self.workdir / "caller-policy.yaml"
        policy_file.write_text(yaml.safe_dump(spec))
        self.receipts = ReceiptStore(self.workdir / "receipts.db")
        self.verifier = Verifier(client_policy.load(policy_file))
        self.http = httpx2.Client(transport=VerifiedTransport(self.verifier, store=self.receipts))

    def stop(self) -> None:
        if self.http is not None:
            self.http.close()
        if self.receipts is not None:
            self.receipts.close()
        for pod in self.pods:
            pod.stop()
        self.supervisor.stop_all()
        if self.agents is not None:
            self.agents.stop_all()
        if self.operator is not None:
            self.operator.stop()
        if self.chain is not None:
            self.chain.stop()
        self.cluster.stop()

    @property
    def caller(self) -> httpx2.Client:
        assert self.http is not None, "start() the story first"
        return self.http

    def remove(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _attested(self, node: str) -> bool:
        labels = self.get("node", node).get("metadata", {}).get("labels", {})
        return bool(labels.get("cocoon.dev/attested") == "true")

    def get(self, *args: str) -> dict[str, Any]:
        result = self.cluster.kubectl("get", *args, "-o", "json", check=False)
        return json.loads(result.stdout) if result.returncode == 0 else {}

    # -- people ----------------------------------------------------------------------------------

    def provider_and_payer(self) -> tuple[Address, Address, str]:
        """A provider payout wallet and a funded payer wallet; the payer's key as Secret JSON."""
        assert self.chain is not None
        payer_key = keys.generate()
        payer = wallet_address(keys.public_bytes(payer_key))
        asyncio.run(emulator.faucet(self.chain.url, payer, 10 * TON))
        self.say(f"payer wallet funded with 10 TON by the emulator's faucet: {raw(payer)}")
        return self.payee, payer, keyfile.to_json(payer_key)

    def balance(self, address: Address) -> int:
        assert self.chain is not None
        return money.balance(self.chain.url, address)

    # -- the pool ----------------------------------------------------------------------------

    def create_pool(self) -> PodStandIn:
        self.cluster.kubectl("create", "namespace", NAMESPACE, check=False)
        model_files = configmap_data(MODEL)
        self.cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "chat-models", "namespace": NAMESPACE},
                "data": model_files,
            }
        )
        self.cluster.apply(
            {
                "apiVersion": "cocoon.dev/v1alpha1",
                "kind": "InferencePool",
                "metadata": {"name": POOL, "namespace": NAMESPACE},
                "spec": {
                    "model": {"name": MODEL, "repository": {"configMap": {"name": "chat-models"}}},
                    "replicas": 1,
                    "gpusPerReplica": 1,
                    "teeTypes": ["sev-snp"],
                    "price": PRICE,
                    "meter": {"maxOutputTokens": 64},
                },
            }
        )
        self.say(
            "InferencePool demo/chat created; waiting for the scheduler to place it on an "
            "attested node"
        )
        wait_for(
            lambda: (
                self._condition("inferencepool.cocoon.dev", POOL, "Ready").get("status") == "True"
            ),
            timeout=90,
            what="the pool Ready",
        )
        pods = [
            p
            for p in self.get("pods", "-n", NAMESPACE, "-l", f"cocoon.dev/pool={POOL}").get(
                "items", []
            )
            if p["spec"].get("nodeName")
        ]
        pod = pods[0]
        assert self.agents is not None and self.operator is not None
        self.say(
            f"pod {pod['metadata']['name']} placed on {pod['spec']['nodeName']}; kwok only "
            "pretends to run it, so real Triton and meter processes stand in, from the "
            "pod spec the operator rendered"
        )
        running = stand_in(
            pod,
            cluster=self.cluster,
            workdir=self.workdir / "pods",
            evidence_socket=self.agents.meter_socket(pod["spec"]["nodeName"]),
            operator_url=self.operator.api_url,
            supervisor=self.supervisor,
        )
        self.pods.append(running)
        return running

    def _condition(self, kind: str, name: str, type_: str) -> dict[str, Any]:
        obj = self.get(kind, name, "-n", NAMESPACE)
        for cond in (obj.get("status") or {}).get("conditions") or []:
            if cond.get("type") == type_:
                return dict(cond)
        return {}
