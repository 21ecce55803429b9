"""A real local Kubernetes control plane on loopback: etcd, kube-apiserver (RBAC on),
kube-controller-manager, kube-scheduler and kwok for fake confidential GPU nodes.

Binaries come from `cocoon.devstack.binaries`. Used by the e2e pytest fixtures and by
`cocoon dev up`.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cocoon.devstack import pki as pkimod
from cocoon.devstack.binaries import stages_file
from cocoon.devstack.gpunode import FAKE_NODE_ANNOTATION, GpuNode
from cocoon.devstack.kubeconfig import certificate_user, write_kubeconfig
from cocoon.devstack.process import Supervisor, free_port, wait_for

NODE_LEASE_SECONDS = 40
HEARTBEAT_STAGE = "node-heartbeat-with-lease"


class CommandFailed(RuntimeError):
    """A kubectl or helm call failed; the message carries its stderr, which says why."""

    def __init__(self, result: subprocess.CompletedProcess[str]) -> None:
        super().__init__(
            f"{' '.join(map(str, result.args[:3]))} ... exited {result.returncode}: "
            f"{result.stderr.strip() or result.stdout.strip()}"
        )
        self.result = result


# Metadata only, and only for the resources callers of the operator's API name: enough to prove a
# refused request reached no further, small enough to leave the API server unhurried.
AUDIT_POLICY: dict[str, Any] = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {
            "level": "Metadata",
            "resources": [
                {
                    "group": "cocoon.dev",
                    "resources": [
                        "inferencepools", "inferencepools/*", "paymentchannels", "paymentchannels/*"
                    ],
                }
            ],
        },
        {"level": "None"},
    ],
}


@dataclass
class LocalCluster:
    workdir: Path
    bin_dir: Path
    die_with_parent: bool = True
    # how long a fake node's Lease lasts (kwok renews it well within, as a kubelet does); the
    # node lifecycle controller's grace period follows it. A fleet benchmark lengthens it so
    # 10,000 nodes' renewals do not swamp the API server it measures.
    node_lease_seconds: int = NODE_LEASE_SECONDS
    # how often kwok rewrites a fake node's status conditions (kwok's own stage: every ~10
    # minutes); a fleet benchmark lengthens it as it does the Leases: 10,000 simulated kubelets'
    # status writes are work for kwok, the API server and kcm on the cores the operator shares
    node_heartbeat_seconds: int | None = None
    ports: dict[str, int] = field(default_factory=dict)
    supervisor: Supervisor = field(init=False)

    def __post_init__(self) -> None:
        self.supervisor = Supervisor(self.workdir / "logs", die_with_parent=self.die_with_parent)

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    @property
    def audit_log(self) -> Path:
        return self.workdir / "audit.log"

    def audit_events(self) -> list[dict[str, Any]]:
        """The API server's audit events so far: every request for our own resources
        (`AUDIT_POLICY`), so a test can count what a request cost the API server."""
        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines() if line]

    def _stages(self) -> Path:
        """kwok's stages: its own, or a copy whose node heartbeat comes every
        `node_heartbeat_seconds` (plus up to 10 s of jitter, as kwok's own has)."""
        if self.node_heartbeat_seconds is None:
            return stages_file()
        stages = list(yaml.safe_load_all(stages_file().read_text()))
        heartbeat = [s for s in stages if s["metadata"]["name"] == HEARTBEAT_STAGE]
        if not heartbeat:
            raise RuntimeError(f"{stages_file()} has no {HEARTBEAT_STAGE} stage to lengthen")
        heartbeat[0]["spec"]["delay"] = {
            "durationMilliseconds": self.node_heartbeat_seconds * 1000,
            "jitterDurationMilliseconds": self.node_heartbeat_seconds * 1000 + 10_000,
        }
        path = self.workdir / "kwok-stages.yaml"
        path.write_text(yaml.safe_dump_all(stages))
        return path

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        pki = pkimod.create(self.workdir / "pki")
        self.ports = {
            k: free_port() for k in ("etcd", "etcd_peer", "apiserver", "kcm", "sched", "kwok")
        }
        self._write_admin_kubeconfig(pki)
        try:
            self._start_etcd()
            self._start_apiserver(pki)
            self._start_controllers(pki)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.supervisor.stop_all()

    # -- processes -------------------------------------------------------------------------

    def _start_etcd(self) -> None:
        data = self.workdir / "etcd"
        client = f"http://127.0.0.1:{self.ports['etcd']}"
        peer = f"http://127.0.0.1:{self.ports['etcd_peer']}"
        etcd = self.supervisor.start(
            "etcd",
            [
                str(self.bin_dir / "etcd"),
                "--name=local",
                f"--data-dir={data}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=local={peer}",
                "--unsafe-no-fsync",
                "--log-level=warn",
                "--listen-metrics-urls=",
                "--quota-backend-bytes=4294967296",
            ],
        )
        wait_for(lambda: _http_ok(f"{client}/health"), timeout=60, what="etcd health", watch=etcd)

    def _start_apiserver(self, pki: pkimod.Pki) -> None:
        port = self.ports["apiserver"]
        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        apiserver = self.supervisor.start(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                "--endpoint-reconciler-type=none",
                "--enable-priority-and-fairness=false",
                "--enable-admission-plugins=NodeRestriction",
                f"--audit-policy-file={policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--v=0",
            ],
        )
        wait_for(
            lambda: _http_ok(f"{self.server}/readyz", pki.ca_cert, (pki.admin_cert, pki.admin_key)),
            timeout=120,
            what="kube-apiserver /readyz",
            watch=apiserver,
            interval=0.25,
        )

    def _start_controllers(self, pki: pkimod.Pki) -> None:
        kubeconfig = str(self.kubeconfig)
        kcm = self.supervisor.start(
            "kube-controller-manager",
            [
                str(self.bin_dir / "kube-controller-manager"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--leader-elect=false",
                f"--root-ca-file={pki.ca_cert}",
                f"--service-account-private-key-file={pki.sa_key}",
                "--use-service-account-credentials",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['kcm']}",
                "--kube-api-qps=5000",
                "--kube-api-burst=10000",
                f"--node-monitor-grace-period={self.node_lease_seconds}s",
                # a node kwok has not made Ready within this is marked unreachable, which the
                # rate-limited tainter then takes minutes to undo across thousands of nodes
                f"--node-startup-grace-period={max(60, self.node_lease_seconds)}s",
                "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-route",
            ],
        )
        self.supervisor.start(
            "kube-scheduler",
            [
                str(self.bin_dir / "kube-scheduler"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['sched']}",
                "--kube-api-qps=5000",
                "--kube-api-burst=10000",
            ],
        )
        self.supervisor.start(
            "kwok",
            [
                str(self.bin_dir / "kwok"),
                f"--kubeconfig={kubeconfig}",
                f"--config={self._stages()}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
                "--cidr=10.244.0.1/16",
                "--node-ip=10.0.0.1",
                f"--server-address=127.0.0.1:{self.ports['kwok']}",
                # A Lease per fake node, renewed every 10 s, as a kubelet does: the
                # heartbeat-with-lease stages update node status rarely, so without Leases the
                # node lifecycle controller marks the nodes NotReady between heartbeats.
                f"--node-lease-duration-seconds={self.node_lease_seconds}",
                # one INFO line per lease renewal and node or pod patch cost kwok (and the
                # machine it shares) a tenth of its CPU at 10,000 nodes
                "--v=WARN",
            ],
        )
        # the ServiceAccount admission plugin refuses pods until kcm has made `default`
        wait_for(
            lambda: self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0,
            timeout=120,
            what="serviceaccount/default",
            watch=kcm,
            interval=0.5,
        )

    # -- access ----------------------------------------------------------------------------

    def _write_admin_kubeconfig(self, pki: pkimod.Pki) -> None:
        admin = certificate_user(pki.admin_cert.read_bytes(), pki.admin_key.read_bytes())
        write_kubeconfig(self.kubeconfig, self.server, pki.ca_cert.read_bytes(), user=admin)
        self._pki = pki

    def token_kubeconfig(self, token: str, path: Path, namespace: str = "default") -> Path:
        """A kubeconfig that authenticates as a ServiceAccount token (least privilege)."""
        return write_kubeconfig(
            path, self.server, self._pki.ca_cert.read_bytes(), user={"token": token},
            namespace=namespace,
        )

    def serving_certificate(self, name: str, hosts: list[str]) -> tuple[Path, Path]:
        """A server certificate from the cluster CA (cert, key paths), e.g. the operator API's."""
        return pkimod.serving_certificate(self._pki, name, hosts, self.workdir / "pki")

    @property
    def ca_cert(self) -> Path:
        return self._pki.ca_cert

    def certificate_kubeconfig(self, common_name: str, organization: str, path: Path) -> Path:
        """A kubeconfig for a certificate identity, e.g. a node's kubelet."""
        cert, key = pkimod.client_certificate(self._pki, common_name, organization)
        return write_kubeconfig(
            path, self.server, self._pki.ca_cert.read_bytes(), user=certificate_user(cert, key)
        )

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.bin_dir / "kubectl"), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise CommandFailed(result)
        return result

    def apply(self, *manifests: dict[str, Any], kubeconfig: Path | None = None) -> None:
        docs = "\n---\n".join(json.dumps(m) for m in manifests)
        self.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            "-",
            input=docs,
            kubeconfig=kubeconfig,
        )

    def add_nodes(self, *nodes: GpuNode) -> None:
        # status is accepted on create; kwok's node-initialize keeps the capacity we set
        docs = "\n---\n".join(json.dumps(n.manifest()) for n in nodes)
        self.kubectl("create", "-f", "-", input=docs)

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        home = self.workdir / "helm"
        env = {
            **os.environ,
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
            "KUBECONFIG": str(self.kubeconfig),
        }
        result = subprocess.run(
            [str(self.bin_dir / "helm"), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
        if check and result.returncode != 0:
            raise CommandFailed(result)
        return result

    def remove_workdir(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def _http_ok(url: str, ca: Path | None = None, cert: tuple[Path, Path] | None = None) -> bool:
    context = None
    if url.startswith("https"):
        context = ssl.create_default_context(cafile=str(ca) if ca else None)
        if cert:
            context.load_cert_chain(str(cert[0]), str(cert[1]))
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:  # noqa: S310
            return bool(response.status == 200)
    except OSError:
        return False
