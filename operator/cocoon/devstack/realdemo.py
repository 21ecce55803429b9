"""`cocoon dev demo --real-pods` (`make demo-real`): paid calls served by real pods.

The chart installed with stock values on a `RealNode` (containerd, kubelet, the images
`images/build.sh` made), a pool whose Triton and meter run as the operator renders them, a
PaymentChannel funded on the chart's chain emulator, and paid calls by the caller's own
`cocoon call` through the pool's Service. Shorter than the kwok story (`story.py`): no claims,
top-up or close; it shows that what the chart ships runs and bills.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from cocoon.devstack import chart, realpool
from cocoon.devstack.cluster import LocalCluster, ensure_binaries
from cocoon.devstack.node import RealNode
from cocoon.devstack.process import wait_for
from cocoon.devstack.story import ton

NAMESPACE = "demo"
POOL = "chat"
CHANNEL = "main"
PAYOUT = "0:" + "ab" * 32
VERSION = "0.1.0"


def run(requests: int, workdir: Path, say: Callable[[str], None]) -> int:
    started = time.monotonic()
    say("building what changed of the images (buildah; seconds when nothing did)")
    images = chart.ensure_images()
    cluster = LocalCluster(workdir / "cluster", ensure_binaries())
    node = RealNode(cluster)
    leftovers: list[str] = []
    try:
        say("control plane, then a real node: containerd, kubelet, kube-proxy, CoreDNS")
        cluster.start()
        node.start(images)
        say("helm install with stock values (simulated TEE); the agent pod attests the node")
        simulated = realpool.install_attested(cluster, node, PAYOUT)
        say("InferencePool demo/chat: Triton and the meter as real containers")
        realpool.create_pool(cluster, NAMESPACE, POOL, version=VERSION)
        wait_for(
            lambda: bool(realpool.ready_pool_pods(cluster, NAMESPACE, POOL)),
            timeout=300,
            what="the pool's pod Ready",
        )
        [pod] = realpool.ready_pool_pods(cluster, NAMESPACE, POOL)
        say(f"pod {pod['metadata']['name']} Ready on {pod['spec']['nodeName']}")
        credential = realpool.open_channel(cluster, node, NAMESPACE, POOL, CHANNEL)
        say("PaymentChannel demo/main deployed and funded on the chart's chain emulator")
        caller = realpool.Caller(node, workdir / "caller", credential)
        caller.policy(simulated)
        address = realpool.service_ip(cluster, NAMESPACE, POOL)
        for i in range(requests):
            caller.paid(address, f"a private prompt {i}")
            cost = ton(caller.costs()[-1][1])
            say(f"call {i + 1}: the meter's attested TLS verified, then paid {cost}")
        charged = sum(cost for _, cost in caller.costs())
        wait_for(
            lambda: int(realpool.status(
                cluster, "paymentchannel.cocoon.dev", NAMESPACE, CHANNEL
            ).get("owed", 0)) == charged,
            timeout=120,
            what="the channel to owe what the receipts charged",
        )  # fmt: skip
        say(
            f"{requests} paid calls served by real pods; the channel owes {ton(charged)}, the sum "
            f"of the receipts; {time.monotonic() - started:.0f} s in all"
        )
        return 0
    finally:
        leftovers = node.stop()
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        if leftovers:
            say(f"the node left things behind: {leftovers}")
