"""`cocoon dev up|down|status`: the local control plane for a human, with a KUBECONFIG to use."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cocoon.devstack.binaries import ensure_binaries
from cocoon.devstack.cluster import LocalCluster
from cocoon.devstack.gpunode import GpuNode
from cocoon.devstack.process import stop_on_signals, wait_for_signal

if TYPE_CHECKING:
    from cocoon.devstack.story import Story

DEFAULT_NODES = (
    GpuNode("gpu-snp-0", gpus=8, tee="sev-snp"),
    GpuNode("gpu-tdx-0", gpus=8, tee="tdx"),
    GpuNode("gpu-plain-0", gpus=8, tee=None),
)


def state_dir() -> Path:
    return Path(os.environ.get("COCOON_DEV_HOME", Path.home() / ".cache" / "cocoon-dev"))


def _state_file() -> Path:
    return state_dir() / "state.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def up(crds: Path | None) -> Path:
    """Start the cluster detached from this process; returns the admin kubeconfig."""
    state = _state_file()
    if state.exists():
        saved = json.loads(state.read_text())
        if all(_alive(p) for p in saved["pids"]):
            return Path(saved["kubeconfig"])
        down()
    cluster = LocalCluster(state_dir() / "cluster", ensure_binaries(), die_with_parent=False)
    cluster.remove_workdir()
    cluster.start()
    cluster.add_nodes(*DEFAULT_NODES)
    if crds is not None and crds.is_dir():
        cluster.kubectl("apply", "--server-side", "-f", str(crds))
    state.write_text(
        json.dumps(
            {
                "kubeconfig": str(cluster.kubeconfig),
                "bin": str(cluster.bin_dir),
                "pids": [p.pid for p in cluster.supervisor.processes],
                "logs": str(cluster.supervisor.log_dir),
            }
        )
    )
    return cluster.kubeconfig


def down() -> None:
    state = _state_file()
    if not state.exists():
        return
    saved = json.loads(state.read_text())
    for pid in reversed(saved["pids"]):
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    state.unlink()


def _teller() -> Callable[[str], None]:
    start = time.monotonic()

    def say(line: str) -> None:
        sys.stdout.write(f"[{time.monotonic() - start:6.1f}s] {line}\n")
        sys.stdout.flush()

    return say


def demo(requests: int, keep: bool, workdir: Path | None) -> int:
    """The README's first command (`make demo`): paid calls served by real pods, the provider
    paid on chain (cocoon.devstack.realdemo)."""
    import tempfile

    from cocoon.devstack import realdemo

    with stop_on_signals():
        realdemo.run(
            requests,
            workdir or Path(tempfile.mkdtemp(prefix="cocoon-demo-")),
            _teller(),
            keep=keep,
        )
    return 0


def demo_sim(requests: int, keep: bool, workdir: Path | None) -> int:
    """`make demo-sim`: the whole money story on kwok nodes, stand-in processes for the pool's
    pods, told as it happens, then a summary (cocoon.devstack.story)."""
    from cocoon.devstack import story

    with stop_on_signals():
        return _demo(story.Story(workdir, _teller()), requests, keep)


def _demo(told: Story, requests: int, keep: bool) -> int:
    from cocoon.devstack import picture, story

    try:
        summary = story.tell(told, requests)
        chart = told.workdir / "channel.svg"
        chart.write_text(picture.svg(summary.samples, "PaymentChannel demo/main over time"))
        (told.workdir / "summary.json").write_text(
            json.dumps({k: v for k, v in summary.__dict__.items() if k != "samples"}, indent=2)
        )
        sys.stdout.write(f"\nSummary\n{summary.table()}\n\nchannel over time: {chart}\n")
        if keep:
            pod = told.pods[0]
            sys.stdout.write(
                "\nThe stack stays up until Ctrl-C:\n"
                f"  export KUBECONFIG={told.cluster.kubeconfig}\n"
                f"  PATH={told.cluster.bin_dir}:$PATH kubectl get an,cip,pch -A\n"
                f"  the pool's meter (standing in for pod {pod.pod}): {pod.http_url}\n"
                f"  its metrics: {pod.admin_url}/metrics\n"
            )
            wait_for_signal()
    finally:
        told.stop()
        if not keep:
            sys.stdout.write(f"stack stopped; logs and the chart are in {told.workdir}\n")
    return 0


def _run(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir) if args.workdir else None
    if args.action == "demo":
        return demo(args.requests or 5, args.keep, workdir)
    if args.action == "demo-sim":
        return demo_sim(args.requests or 40, args.keep, workdir)
    if args.action == "up":
        kubeconfig = up(Path(args.crds) if args.crds else None)
        sys.stdout.write(
            f"local control plane is up\n  export KUBECONFIG={kubeconfig}\n"
            f"  PATH={ensure_binaries()}:$PATH   # kubectl, helm\n"
            "  stop it with: cocoon dev down\n"
        )
    elif args.action == "down":
        down()
        sys.stdout.write("local control plane stopped\n")
    else:
        state = _state_file()
        if not state.exists():
            sys.stdout.write("down\n")
            return 1
        saved = json.loads(state.read_text())
        alive = all(_alive(p) for p in saved["pids"])
        sys.stdout.write(("up" if alive else "degraded") + f"\nKUBECONFIG={saved['kubeconfig']}\n")
        return 0 if alive else 1
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("up", "down", "status", "demo", "demo-sim"))
    parser.add_argument(
        "--requests", type=int, default=None, help="demo: paid calls to send (5; demo-sim: 40)"
    )
    parser.add_argument("--keep", action="store_true", help="demo: leave the stack up")
    parser.add_argument("--workdir", help="demo: where to keep logs and results")
    parser.add_argument("--crds", default="crds", help="CRD folder to apply on up (default: crds)")
    parser.set_defaults(handler=_run)
