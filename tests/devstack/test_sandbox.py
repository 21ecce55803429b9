"""The real node's sandbox on the real host: what it borrows (a network namespace with the node's
address, a private mount namespace, a cgroup tree, host sysctls) is all given back by `close()`,
including processes that escaped their parent the way container shims do."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from cocoon.devstack.sandbox import HOST_SYSCTLS, NODE_IP, Sandbox, system_env, v1_controllers


def test_close_gives_back_everything_the_node_borrowed() -> None:
    sandbox = Sandbox(f"cocoon-t{uuid.uuid4().hex[:8]}")
    sysctl = Path("/proc/sys") / HOST_SYSCTLS[0]
    before = sysctl.read_text()
    sandbox.open()
    try:
        inside = subprocess.run(
            [*sandbox.enter(), "ip", "-o", "-4", "addr", "show", "node0"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert f"inet {NODE_IP}/" in inside
        outside = subprocess.run(
            ["ip", "-o", "-4", "addr"], capture_output=True, text=True, check=True
        ).stdout
        assert NODE_IP not in outside, "the node's address leaked into the host namespace"
        mounts = subprocess.run(
            [*sandbox.enter(), "cat", "/proc/self/mounts"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "tmpfs /var/lib tmpfs" in mounts
        assert "tmpfs /var/lib tmpfs" not in Path("/proc/self/mounts").read_text()
        # a detached process in the node's cgroup, like a shim that outlives containerd
        escaped = subprocess.Popen(
            [*sandbox.enter(), "setsid", "sleep", "600"],
            preexec_fn=sandbox.enter_cgroup,  # noqa: PLW1509
        )
        sysctl.write_text("1\n" if before.strip() != "1" else "0\n")  # what the kubelet does
        assert escaped.pid in sandbox.pids()
    finally:
        leftovers = sandbox.close()
    assert leftovers == []
    assert escaped.wait(5) != 0
    assert sysctl.read_text() == before
    assert not sandbox.netns.exists()
    assert all(not (c / sandbox.name).exists() for c in v1_controllers())


def test_the_node_finds_system_tools_whatever_the_callers_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ip, iptables and runc live in /usr/sbin: a caller whose PATH lacks it (a stripped sudo or
    CI environment) still gets a working node, and its processes see /usr/sbin and /sbin."""
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    sandbox = Sandbox(f"cocoon-t{uuid.uuid4().hex[:8]}")
    sandbox.open()
    try:
        rules = sandbox.run("iptables", "-t", "nat", "-S")
        assert rules.returncode == 0, rules.stderr
        assert "-P PREROUTING ACCEPT" in rules.stdout
    finally:
        assert sandbox.close() == []
    assert {"/usr/sbin", "/sbin"} <= set(system_env()["PATH"].split(":"))
