"""The operator's side of the local stack: the CRDs and the chart's security objects, installed
as the chart renders them, and `cocoon operator` run under its chart-granted ServiceAccount.

Node agents (`cocoon.devstack.agents`) and pod stand-ins (`cocoon.devstack.podstandin`) complete
it. The e2e tests and `cocoon dev demo` share all of it, so what is tested is what is demonstrated.
"""

from __future__ import annotations

import re
import ssl
import sys
from pathlib import Path

from cocoon import keys
from cocoon.devstack.binaries import repo_root
from cocoon.devstack.calls import http_json
from cocoon.devstack.cluster import LocalCluster
from cocoon.devstack.gpunode import GpuNode
from cocoon.devstack.process import Managed, Supervisor, free_port, http_ok, wait_for

OPERATOR_NAMESPACE = "cocoon-system"
RELEASE = "cocoon"


def install_crds(cluster: LocalCluster) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(repo_root() / "crds"))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd",
        "-l",
        "app.kubernetes.io/part-of=cocoon",
    )


def chart_templates(cluster: LocalCluster, *templates: str) -> str:
    """Templates exactly as the Helm chart renders them: what runs locally is what ships."""
    shows = [arg for t in templates for arg in ("--show-only", f"templates/{t}")]
    out = cluster.helm(
        "template",
        RELEASE,
        str(repo_root() / "charts" / "cocoon"),
        "--namespace",
        OPERATOR_NAMESPACE,
        "--kube-version",
        "1.34.4",
        *shows,
    )
    return out.stdout


def install_security(cluster: LocalCluster) -> None:
    """RBAC for operator and agent, and the admission policy; wait until the policy bites."""
    cluster.kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=chart_templates(
            cluster, "rbac-operator.yaml", "rbac-agent.yaml", "admission-policy.yaml"
        ),
    )
    cluster.add_nodes(GpuNode("vap-probe", gpus=0, tee=None))
    node_kc = cluster.certificate_kubeconfig(
        "system:node:vap-probe", "system:nodes", cluster.workdir / "vap-probe.kubeconfig"
    )

    def denied() -> bool:
        result = cluster.kubectl(
            "label",
            "node",
            "vap-probe",
            "cocoon.dev/attested=true",
            "--dry-run=server",
            kubeconfig=node_kc,
            check=False,
        )
        return "ValidatingAdmissionPolicy" in result.stderr

    wait_for(denied, timeout=60, what="the attestation admission policy to take effect")
    cluster.kubectl("delete", "node", "vap-probe")


def operator_kubeconfig(cluster: LocalCluster) -> Path:
    token = cluster.kubectl(
        "create", "token", "cocoon-operator", "-n", OPERATOR_NAMESPACE, "--duration=24h"
    ).stdout.strip()
    return cluster.token_kubeconfig(
        token, cluster.workdir / "operator.kubeconfig", namespace=OPERATOR_NAMESPACE
    )


SHORT_LEASE = {
    "COCOON_LEASE_SECONDS": "6",
    "COCOON_LEASE_RENEW_DEADLINE_SECONDS": "4",
    "COCOON_LEASE_RETRY_SECONDS": "1",
}


class Operator:
    """`cocoon operator` as a child process; restartable and killable for crash tests.

    Several may run against one cluster (`name` tells them apart, in logs and in the Lease's
    holder): all serve the API, the Lease holder runs the controllers. Leases are short here
    (6 s) so that tests of a killed leader do not wait long."""

    def __init__(
        self,
        cluster: LocalCluster,
        kubeconfig: Path,
        env: dict[str, str] | None = None,
        name: str = "operator",
    ) -> None:
        self.cluster = cluster
        self.kubeconfig = kubeconfig
        self.env = env or {}
        self.name = name
        self.supervisor = Supervisor(cluster.workdir / "logs")
        self.process: Managed | None = None
        self.starts = 0
        self.api_port = free_port()
        # the operator API serves TLS with a certificate from the cluster CA, as the chart's
        self.tls_cert, self.tls_key = cluster.serving_certificate(
            "cocoon-operator", ["127.0.0.1", "localhost"]
        )
        self.ca_file = cluster.ca_cert
        self.tls = ssl.create_default_context(cafile=str(self.ca_file))
        # one signing key for every replica and restart, as the chart's Secret: results stay
        # verifiable and any replica checks a meter challenge another issued
        self.signing_key = cluster.workdir / "operator-signing.key"
        keys.load_or_create(self.signing_key)

    @property
    def api_url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def identity_prefix(self) -> str:
        """How this process's Lease holder identity begins."""
        return f"{self.name}-{self.starts}-"

    def start(self, *, lead: bool = True) -> None:
        """Start and wait until the API answers and, with `lead`, the controllers watch."""
        self.starts += 1
        env = {
            "KUBECONFIG": str(self.kubeconfig),
            "PYTHONUNBUFFERED": "1",
            "HOSTNAME": f"{self.name}-{self.starts}",
            "COCOON_API_HOST": "127.0.0.1",
            "COCOON_API_PORT": str(self.api_port),
            "COCOON_API_TLS_CERT": str(self.tls_cert),
            "COCOON_API_TLS_KEY": str(self.tls_key),
            "COCOON_OPERATOR_CA_PEM": self.ca_file.read_text(),
            "COCOON_SIGNING_KEY_FILE": str(self.signing_key),
            "COCOON_NAMESPACE": OPERATOR_NAMESPACE,
            "COCOON_OPERATOR_URL": self.api_url,
            "COCOON_RESYNC_SECONDS": "2",
            # every local agent, meter and test shares 127.0.0.1: one source address, not one
            # per pod as in a cluster
            "COCOON_API_RATE_PER_SOURCE": "500",
            "COCOON_API_BURST_PER_SOURCE": "2000",
            **SHORT_LEASE,
            **self.env,
        }
        self.process = self.supervisor.start(
            f"{self.name}-{self.starts}",
            [sys.executable, "-m", "cocoon.cli", "operator", "-v"],
            env=env,
            cwd=repo_root(),
        )
        process = self.process
        marker = "watch-stream for" if lead else "waiting to lead"
        seen: list[bool] = []  # the whole log: at fleet scale the marker scrolls out of a tail

        def up() -> bool:
            if not seen and marker in process.log.read_text(errors="replace"):
                seen.append(True)
            return bool(seen) and http_ok(f"{self.api_url}/readyz", context=self.tls)

        wait_for(
            up,
            timeout=60,
            what=f"{self.name}'s API and {'watch streams' if lead else 'lease wait'}",
            watch=process,
        )

    def stop(self) -> None:
        self.supervisor.stop_all()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def log(self) -> str:
        return "\n".join(p.log.read_text(errors="replace") for p in self.supervisor.processes)

    def metric(self, sample: str) -> float:
        """One sample (`name{labels}`) of this replica's /metrics; 0 while not exported yet."""
        code, text = http_json("GET", f"{self.api_url}/metrics", context=self.tls)
        if code != 200:
            raise RuntimeError(f"{self.name}'s /metrics answered {code}")
        found = re.search(rf"^{re.escape(sample)} (\S+)$", str(text), re.MULTILINE)
        return float(found.group(1)) if found else 0.0
