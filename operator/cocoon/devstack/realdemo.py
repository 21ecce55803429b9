"""`cocoon dev demo` (`make demo`): paid calls served by real pods, and the provider paid on chain.

The chart installed with stock values (plus the provider's payout address) on a `RealNode`
(containerd, kubelet, kube-proxy, CoreDNS, the images `images/build.sh` made); a pool whose
Triton and meter run as the operator renders them; a PaymentChannel funded on the chart's chain
emulator; paid calls by the caller's own `cocoon call` through the pool's Service; then the
operator's claim, checked the way a person checks it (`cocoon.devstack.money`): the channel's
status reconciled against the chain, and the payout wallet holding exactly what was claimed less
the fees the chain charged. The longer kwok story (top-up, close, refund) is `make demo-sim`.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cocoon import keys
from cocoon.client import ReceiptStore
from cocoon.devstack import chart, money, realpool
from cocoon.devstack.binaries import ensure_binaries
from cocoon.devstack.cluster import LocalCluster
from cocoon.devstack.node import RealNode
from cocoon.devstack.process import wait_for, wait_for_signal
from cocoon.devstack.summary import ton
from cocoon.ton import settlement
from cocoon.ton.tvm import raw
from cocoon.ton.wallet import wallet_address

NAMESPACE = "demo"
POOL = "chat"
CHANNEL = "main"
VERSION = "0.1.0"
# the operator's first claim goes out once this much is signed (the smallest claim it makes by
# default, well above the claim's own gas): one claim during the demo's calls, 2.6 mTON each
CLAIM_THRESHOLD = settlement.DEFAULT_MIN_CLAIM
MIN_REQUESTS = 4


@dataclass(frozen=True)
class Summary:
    requests: int
    charged: int  # the sum of the caller's verified receipts
    payout: money.Payout
    seconds: float

    def table(self) -> str:
        books = self.payout.books
        rows = [
            ("paid calls served by a real pool pod", str(self.requests)),
            ("cost on the caller's verified receipts", ton(self.charged)),
            ("owed on the channel (signed meter reports)", ton(books.owed)),
            ("claimed on chain by the provider", ton(books.claimed)),
            ("signed, not yet claimed", ton(books.unclaimed)),
            ("provider wallet received (claimed less fees)", ton(self.payout.payee_received)),
            ("  fees the provider's side paid (read on chain)", ton(self.payout.payee_fees)),
            ("demo time", f"{self.seconds:.0f} s"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def run(requests: int, workdir: Path, say: Callable[[str], None], *, keep: bool = False) -> Summary:
    """The whole demo; raises if any step does not happen as it should."""
    preflight(requests)
    started = time.monotonic()
    say("building what is missing: control plane and node binaries, images (seconds if cached)")
    bin_dir = ensure_binaries()
    images = chart.ensure_images()
    cluster = LocalCluster(workdir / "cluster", bin_dir)
    node = RealNode(cluster)
    try:
        say("control plane, then a real node: containerd, kubelet, kube-proxy, CoreDNS")
        cluster.start()
        node.start(images)
        payee = wallet_address(keys.public_bytes(keys.generate()))
        say(f"helm install, stock values + payout address {raw(payee)} (simulated TEE)")
        simulated = realpool.install_attested(cluster, node, raw(payee))
        say(f"node {node.name} attested by the agent pod; InferencePool {NAMESPACE}/{POOL}")
        realpool.create_pool(cluster, NAMESPACE, POOL, version=VERSION)
        wait_for(
            lambda: bool(realpool.ready_pool_pods(cluster, NAMESPACE, POOL)),
            timeout=300,
            what="the pool's pod Ready",
        )
        [pod] = realpool.ready_pool_pods(cluster, NAMESPACE, POOL)
        say(f"pod {pod['metadata']['name']} Ready: Triton (read-only root) and the meter")
        credential = realpool.open_channel(
            cluster, node, NAMESPACE, POOL, CHANNEL, claim_threshold=CLAIM_THRESHOLD
        )
        say(f"PaymentChannel {NAMESPACE}/{CHANNEL} funded and open on the chart's chain emulator")
        caller = realpool.Caller(node, workdir / "caller", credential)
        caller.policy(simulated)
        address = realpool.service_ip(cluster, NAMESPACE, POOL)
        charged = serve(cluster, caller, address, requests, say)
        ref = f"{NAMESPACE}/{CHANNEL}"
        wait_for(  # and the operator's promise for the last call signed: the books then close
            lambda: channel_figure(cluster, "claimed") > 0 and promised(cluster) == charged,
            timeout=120,
            what="the provider's first claim, and a promise for everything owed",
        )
        chain = realpool.chain_url(cluster, node)
        payout = money.paid_out(chain, cluster.kubeconfig, ref, payee=payee)
        say(
            f"claimed {ton(payout.books.claimed)} on chain; the payout wallet holds "
            f"{ton(payout.payee_received)} = claimed - {ton(payout.payee_fees)} fees, all read "
            "from the chain"
        )
        summary = Summary(requests, charged, payout, time.monotonic() - started)
        say(f"done\n\nSummary\n{summary.table()}\n")
        if keep:
            say(
                "the stack stays up until Ctrl-C:\n"
                f"  export KUBECONFIG={cluster.kubeconfig}\n"
                f"  PATH={cluster.bin_dir}:$PATH kubectl get an,cip,pch,pods -A"
            )
            wait_for_signal()
        return summary
    finally:
        leftovers = node.stop()
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        if leftovers:
            say(f"the node left things behind: {leftovers}")


def preflight(requests: int) -> None:
    if os.geteuid() != 0:
        raise SystemExit(
            "make demo runs a real kubelet and containerd: run it as root "
            "(or `make demo-sim` for the kwok story without real pods)"
        )
    if requests < MIN_REQUESTS:
        raise SystemExit(
            f"make demo needs at least {MIN_REQUESTS} paid calls (--requests) for the provider's "
            f"first claim ({ton(CLAIM_THRESHOLD)})"
        )


def serve(
    cluster: LocalCluster,
    caller: realpool.Caller,
    address: str,
    requests: int,
    say: Callable[[str], None],
) -> int:
    """Paid calls through the pool's Service; returns their cost once the channel owes it."""
    for i in range(requests):
        caller.paid(address, f"a private prompt {i}")
        cost = ton(caller.costs()[-1][1])
        say(f"call {i + 1} via Service {address}: meter's attested TLS verified, paid {cost}")
    charged = receipted(caller, f"{NAMESPACE}/{CHANNEL}")
    wait_for(
        lambda: channel_figure(cluster, "owed") == charged,
        timeout=120,
        what="the channel to owe what the receipts charged",
    )
    say(f"the channel owes {ton(charged)}: exactly the sum of the caller's verified receipts")
    return charged


def receipted(caller: realpool.Caller, channel: str) -> int:
    """The sum the caller's receipts charged, once their signatures and chain verify."""
    store = ReceiptStore(caller.receipts)
    try:
        report = store.verify(channel)
    finally:
        store.close()
    if not report.ok or report.checked == 0:
        raise RuntimeError(f"the caller's receipts do not verify: {report.problems}")
    return report.channel_cost(channel)


def promised(cluster: LocalCluster) -> int:
    status = realpool.status(cluster, "paymentchannel.cocoon.dev", NAMESPACE, CHANNEL)
    return int((status.get("latestPromise") or {}).get("cumulative", 0))


def channel_figure(cluster: LocalCluster, field: str) -> int:
    status = realpool.status(cluster, "paymentchannel.cocoon.dev", NAMESPACE, CHANNEL)
    return int(status.get(field, 0))
