"""A real node beside the kwok ones: containerd + runc, the bridge CNI, kubelet, kube-proxy and
CoreDNS, all inside a `Sandbox` (network and mount namespace, cgroup tree) that `stop()` removes.
Their configuration files come from `cocoon.devstack.nodeconfig`.

The node registers as `system:node:<name>`, carries the labels of a simulated confidential GPU
node and a fake `nvidia.com/gpu` capacity (an extended resource in its status: nothing allocates
a real device). Images come from `images/build.sh` archives, imported into containerd; pods use
them with `imagePullPolicy: Never` or `IfNotPresent` (nothing can be pulled here).

What reaches what: the apiserver listens on the host's loopback; a relay pair (TCP in the node's
namespace -> Unix socket -> host loopback) gives the node's processes and its pods (through the
`kubernetes` Service, whose EndpointSlice this module writes) the same port. `forward()` opens the
reverse path for tests: a host loopback port to a Service or pod address inside the node.
`kubectl logs/exec/port-forward` do not work: the apiserver cannot reach the kubelet's port inside
the namespace without a non-loopback route on the host. Pod logs are files under `pod_logs`.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cocoon.devstack.cluster import LocalCluster
from cocoon.devstack.gpunode import GpuNode
from cocoon.devstack.nodeconfig import (
    cni_config,
    containerd_config,
    coredns_config,
    kube_proxy_config,
    kubelet_config,
    pause_archive,
)
from cocoon.devstack.process import Managed, free_port, wait_for
from cocoon.devstack.sandbox import NODE_IP, SYSTEM_PATH, Sandbox, system_env


@dataclass
class RealNode:
    cluster: LocalCluster
    name: str = "cocoon-node-0"
    gpus: int = 1  # the simulated TEE attests one GPU; a node declaring more is rejected
    tee: str = "sev-snp"
    sandbox: Sandbox = field(init=False)
    _procs: list[Managed] = field(default_factory=list)

    def __post_init__(self) -> None:
        # the cgroup/netns name is per cluster, so parallel stacks never collide
        self.sandbox = Sandbox(f"cocoon-{self.cluster.workdir.name[-12:]}-{self.name[-8:]}")

    @property
    def workdir(self) -> Path:
        return self.cluster.workdir / "node" / self.name

    @property
    def socket(self) -> Path:
        return self.workdir / "containerd.sock"

    @property
    def pod_logs(self) -> Path:
        return self.workdir / "pod-logs"

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, images: list[Path]) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.sandbox.open()
        try:
            self._relay_apiserver()
            self._start_containerd()
            self.import_images(images)
            self._start_kubelet()
            self._register()
            self._start_kube_proxy()
            self._start_coredns()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> list[str]:
        """Stop every node process, then give back what the sandbox borrowed; returns leftovers."""
        for proc in reversed(self._procs):
            proc.stop(grace=5)
        self._procs.clear()
        return self.sandbox.close()

    # -- pieces -----------------------------------------------------------------------------

    def _start(self, name: str, argv: list[str], *, inside: bool = True) -> Managed:
        prefix = self.sandbox.enter() if inside else []
        proc = self.cluster.supervisor.start(
            f"{self.name}-{name}",
            [*prefix, *argv],
            env={"PATH": SYSTEM_PATH},
            preexec=self.sandbox.enter_cgroup,
        )
        self.cluster.supervisor.processes.remove(proc)  # the node stops its own, before the sandbox
        self._procs.append(proc)
        return proc

    def _relay_apiserver(self) -> None:
        port = self.cluster.ports["apiserver"]
        sock = self.workdir / "apiserver.sock"
        sock.unlink(missing_ok=True)
        self._start(
            "relay-out",
            ["socat", f"UNIX-LISTEN:{sock},fork,mode=600", f"TCP:127.0.0.1:{port}"],
            inside=False,
        )
        wait_for(sock.exists, timeout=10, what="apiserver relay socket")
        # inside: on every address, so pods reach it through the `kubernetes` Service
        self._start(
            "relay-in", ["socat", f"TCP-LISTEN:{port},fork,reuseaddr", f"UNIX-CONNECT:{sock}"]
        )

    def _start_containerd(self) -> None:
        root = self.workdir / "containerd"
        cni = self.workdir / "cni"
        cni.mkdir(parents=True, exist_ok=True)
        (cni / "10-bridge.conflist").write_text(json.dumps(cni_config(self.workdir / "ipam")))
        config = root / "config.toml"
        root.mkdir(parents=True, exist_ok=True)
        config.write_text(containerd_config(root, self.socket, cni))
        proc = self._start("containerd", ["containerd", f"--config={config}"])
        wait_for(
            lambda: self.ctr("version", check=False).returncode == 0,
            timeout=30,
            what="containerd",
            watch=proc,
        )

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ctr", f"--address={self.socket}", "-n", "k8s.io", *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=300,
            env=system_env(),
        )

    def import_images(self, archives: list[Path]) -> None:
        pause = pause_archive(self.cluster.bin_dir / "pause", self.workdir / "pause.tar")
        for archive in [pause, *archives]:
            self.ctr("images", "import", str(archive))

    def _start_kubelet(self) -> None:
        kubeconfig = self.cluster.certificate_kubeconfig(
            f"system:node:{self.name}", "system:nodes", self.workdir / "kubelet.kubeconfig"
        )
        resolv = self.workdir / "resolv.conf"
        resolv.write_text(f"nameserver {NODE_IP}\n")
        config = self.workdir / "kubelet.yaml"
        config.write_text(
            yaml.safe_dump(
                kubelet_config(
                    cgroup_root=self.sandbox.cgroup,
                    runtime=self.socket,
                    pod_logs=self.pod_logs,
                    client_ca=self.cluster.workdir / "pki" / "ca.crt",
                    resolv_conf=resolv,
                )
            )
        )
        proc = self._start(
            "kubelet",
            [
                str(self.cluster.bin_dir / "kubelet"),
                f"--config={config}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={self.workdir / 'kubelet'}",
                f"--hostname-override={self.name}",
                f"--node-ip={NODE_IP}",
                f"--node-labels={','.join(f'{k}={v}' for k, v in self.labels().items())}",
                "--v=1",
            ],
        )
        wait_for(self._ready, timeout=120, what=f"node {self.name} Ready", watch=proc, interval=0.5)

    def labels(self) -> dict[str, str]:
        """The kwok GPU node's labels, minus those only the apiserver's admin may set."""
        labels = GpuNode(self.name, gpus=self.gpus, tee=self.tee).manifest()["metadata"]["labels"]
        labels["type"] = "real"
        return {k: v for k, v in labels.items() if not k.startswith("kubernetes.io/")}

    def _ready(self) -> bool:
        out = self.cluster.kubectl(
            "get",
            "node",
            self.name,
            "-o",
            'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
            check=False,
        )
        return out.stdout.strip() == "True"

    def _register(self) -> None:
        """Fake GPUs as an extended resource, and the `kubernetes` Service's endpoint."""
        gpus = json.dumps({"status": {"capacity": {"nvidia.com/gpu": str(self.gpus)}}})
        self.cluster.kubectl(
            "patch", "node", self.name, "--subresource=status", "--type=merge", "-p", gpus
        )
        port = self.cluster.ports["apiserver"]
        self.cluster.apply(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": "kubernetes",
                    "namespace": "default",
                    "labels": {"kubernetes.io/service-name": "kubernetes"},
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": [NODE_IP], "conditions": {"ready": True}}],
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            }
        )

    def _start_kube_proxy(self) -> None:
        kubeconfig = self.cluster.certificate_kubeconfig(
            "system:kube-proxy", "system:node-proxiers", self.workdir / "kube-proxy.kubeconfig"
        )
        config = self.workdir / "kube-proxy.yaml"
        config.write_text(yaml.safe_dump(kube_proxy_config(kubeconfig, self.name)))
        proc = self._start(
            "kube-proxy", [str(self.cluster.bin_dir / "kube-proxy"), f"--config={config}"]
        )
        # programmed once the `kubernetes` Service (and its endpoint) has its rules
        wait_for(
            lambda: "10.96.0.1/32" in self._inside("iptables", "-t", "nat", "-S").stdout,
            timeout=60,
            what="kube-proxy's rules for the kubernetes Service",
            watch=proc,
            interval=0.5,
        )

    def _start_coredns(self) -> None:
        corefile = self.workdir / "Corefile"
        ready = free_port()
        corefile.write_text(coredns_config(self.cluster.kubeconfig, ready))
        proc = self._start(
            "coredns", [str(self.cluster.bin_dir / "coredns"), "-conf", str(corefile)]
        )
        probe = (
            f"import urllib.request as u; u.urlopen('http://127.0.0.1:{ready}/ready', timeout=2)"
        )
        wait_for(
            lambda: self._inside(sys.executable, "-c", probe).returncode == 0,
            timeout=60,
            what="CoreDNS ready",
            watch=proc,
            interval=0.5,
        )

    def _inside(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return self.sandbox.run(*argv)

    def forward(self, address: str, port: int) -> int:
        """A host loopback port that reaches address:port inside the node (a Service, a pod)."""
        local = free_port()
        sock = self.workdir / f"forward-{local}.sock"
        self._start(
            f"forward-{local}-in",
            ["socat", f"UNIX-LISTEN:{sock},fork,mode=600", f"TCP:{address}:{port}"],
        )
        wait_for(sock.exists, timeout=10, what="forward socket")
        out = self._start(
            f"forward-{local}-out",
            ["socat", f"TCP-LISTEN:{local},bind=127.0.0.1,fork,reuseaddr", f"UNIX-CONNECT:{sock}"],
            inside=False,
        )
        wait_for(lambda: listening(local), timeout=10, what="forward port", watch=out)
        return local


def listening(port: int) -> bool:
    """Whether something accepts connections on the host's loopback `port`."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True
