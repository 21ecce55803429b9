"""The host resources a real node borrows, each created here and given back on the way down.

A real kubelet needs a non-loopback node address, a bridge for pods, iptables rules for Services,
mounts and cgroups, and it changes a few host-wide sysctls. The project's machines allow network
changes only inside namespaces the project creates, so everything with an address lives in one
network namespace; mounts live in one private mount namespace held open by a `sleep` process;
every process of the node (and each container shim, which outlives its parent) sits in one cgroup
tree that is emptied and removed at the end; the sysctls are recorded first and written back.
The apiserver stays on the host's loopback: Unix-socket relays carry its traffic in and out.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
# host-wide (not per-namespace) sysctls that kubelet and kube-proxy write
HOST_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
NODE_IP = "10.200.0.2"
NODE_CIDR = "10.200.0.0/24"
# ip, iptables, runc and sysctl live in /usr/sbin and /sbin: every node process (and the CNI
# plugins and iptables calls it makes) gets this PATH, whatever PATH the caller had.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def system_env() -> dict[str, str]:
    """The caller's environment with SYSTEM_PATH: for every process the node starts."""
    return {**os.environ, "PATH": SYSTEM_PATH}


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True, env=system_env())


def v1_controllers() -> list[Path]:
    """Mounted cgroup v1 hierarchies (kubelet here drives v1 with the cgroupfs driver)."""
    return sorted(
        p
        for p in CGROUP_ROOT.iterdir()
        if p.is_dir() and (p / "cgroup.procs").exists() and p.name != "unified"
    )


@dataclass
class Sandbox:
    """One node's namespace, cgroup tree and recorded sysctls; `close()` is idempotent."""

    name: str
    sysctls: dict[str, str] = field(default_factory=dict)
    holder: subprocess.Popen[bytes] | None = None

    @property
    def netns(self) -> Path:
        return Path("/run/netns") / self.name

    @property
    def cgroup(self) -> str:
        """The kubelet's cgroupRoot; pods, daemons and shims all live below it."""
        return f"/{self.name}"

    def open(self) -> None:
        self.sysctls = {k: (Path("/proc/sys") / k).read_text() for k in HOST_SYSCTLS}
        self._cgroups()
        _run("ip", "netns", "add", self.name)
        ip = ("ip", "-n", self.name)
        _run(*ip, "link", "set", "lo", "up")
        _run(*ip, "link", "add", "node0", "type", "veth", "peer", "name", "node1")
        _run(*ip, "addr", "add", f"{NODE_IP}/24", "dev", "node0")
        _run(*ip, "link", "set", "node0", "up")
        _run(*ip, "link", "set", "node1", "up")
        _run(*ip, "route", "add", "default", "dev", "node0")
        # the private mount namespace every node process joins; its mounts die with it. Fresh
        # /run and /var/lib there keep the runtime's sockets and CNI caches off the host's disk.
        self.holder = subprocess.Popen(
            [
                "nsenter",
                f"--net={self.netns}",
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                "mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /var/lib && exec sleep infinity",
            ],
            start_new_session=True,
            env=system_env(),
            preexec_fn=self._enter_cgroup,  # noqa: PLW1509 - runs in the child before exec
        )
        deadline = time.monotonic() + 10
        while not self._settled(self.holder.pid):
            if time.monotonic() > deadline or self.holder.poll() is not None:
                raise RuntimeError("the node's mount namespace did not come up")
            time.sleep(0.05)

    def _settled(self, pid: int) -> bool:
        # nsenter, unshare and sh each exec the next: `sleep` runs once the mounts are made
        try:
            return Path(f"/proc/{pid}/comm").read_text().strip() == "sleep"
        except OSError:
            return False

    def enter(self) -> list[str]:
        """argv prefix that runs a command inside the node (mount and network namespaces)."""
        assert self.holder is not None
        return ["nsenter", f"--target={self.holder.pid}", "--mount", "--net"]

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a command inside the node with SYSTEM_PATH (iptables is in /usr/sbin)."""
        return subprocess.run(
            [*self.enter(), *argv],
            capture_output=True, text=True, check=False, timeout=timeout, env=system_env(),
        )  # fmt: skip

    def enter_cgroup(self) -> None:
        """preexec_fn for node processes: into the node's cgroup tree, in every hierarchy."""
        self._enter_cgroup()

    def _enter_cgroup(self) -> None:
        for controller in v1_controllers():
            (controller / self.name / "daemons" / "cgroup.procs").write_text(str(os.getpid()))

    def _cgroups(self) -> None:
        for controller in v1_controllers():
            for path in (controller / self.name, controller / self.name / "daemons"):
                path.mkdir(exist_ok=True)
                if controller.name == "cpuset":  # v1 cpuset children start empty
                    for f in ("cpuset.cpus", "cpuset.mems"):
                        (path / f).write_text((controller / f).read_text())

    def pids(self) -> set[int]:
        found: set[int] = set()
        for controller in v1_controllers():
            top = controller / self.name
            if top.is_dir():
                for procs in top.rglob("cgroup.procs"):
                    with contextlib.suppress(OSError):
                        found |= {int(p) for p in procs.read_text().split()}
        return found

    def close(self) -> list[str]:
        """Kill what is left, remove cgroups and the namespace, restore sysctls; returns what
        could not be removed (empty when the host is as it was)."""
        leftovers: list[str] = []
        deadline = time.monotonic() + 15
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        if self.holder is not None:
            with contextlib.suppress(ProcessLookupError):
                self.holder.kill()
            self.holder.wait(5)
        leftovers += [f"pid {p}" for p in self.pids()]
        # runc also mirrors its cgroups into the unified (v2) hierarchy on a hybrid host
        for controller in [*v1_controllers(), CGROUP_ROOT / "unified"]:
            top = controller / self.name
            if not top.is_dir():
                continue
            for path in sorted(
                (p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)
            ):
                with contextlib.suppress(OSError):
                    path.rmdir()
            try:
                top.rmdir()
            except OSError as exc:
                leftovers.append(f"cgroup {top}: {exc.strerror}")
        if self.netns.exists():
            result = subprocess.run(
                ["ip", "netns", "del", self.name],
                check=False, capture_output=True, text=True, env=system_env(),
            )  # fmt: skip
            if result.returncode != 0:
                leftovers.append(f"netns {self.name}: {result.stderr.strip()}")
        for key, value in self.sysctls.items():
            path = Path("/proc/sys") / key
            if path.read_text() != value:
                path.write_text(value)
        return leftovers
