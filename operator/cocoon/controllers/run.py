"""`cocoon operator`: the HTTP API on every replica; the controllers on the elected leader.

Every replica serves evidence, usage and credit (a replica lost interrupts no caller); only the
Lease holder runs kopf's handlers and the level-based passes, and so makes claims. A leader that
loses its Lease stops its controllers and exits, to come back as a follower.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from functools import partial
from typing import Any

import kopf

from cocoon import logs
from cocoon.controllers import (
    attestednode,
    chainprobe,
    channel_chain,
    httpapi,
    inferencepool,
    leader,
    loops,
    meter_api,
    nodes,
    paymentchannel,
    policies,
    views,
)
from cocoon.controllers import settings as operator_settings
from cocoon.kube import Kube
from cocoon.ton import networks

CONTROLLERS = (inferencepool, attestednode, paymentchannel)
LOST_LEADERSHIP = 3  # exit status: the Deployment restarts the pod as a follower
logger = logging.getLogger(__name__)


def _start_passes(memo: kopf.Memo) -> list[asyncio.Task[None]]:
    """One level-based pass per concern on its own clock (kopf timers would put a finalizer on
    every object): a dead chain endpoint slows the channels pass, never attestation or expiry,
    and the chains pass reports it within its own bound."""
    return loops.start(
        {
            "attestation": partial(nodes.resync, memo),
            "pools": partial(inferencepool.resync, memo),
            "channels": partial(paymentchannel.resync, memo),
            "collateral": partial(attestednode.refresh_collateral, memo),
            "chains": partial(chainprobe.resync, memo),
        },
        memo.schedules,
    )


def leading(memo: kopf.Memo) -> bool:
    """Whether this replica may act (run controllers, make claims): it holds the Lease, or
    leader election is off (one replica)."""
    elector: leader.Elector | None = memo.get("elector")
    return elector is None or elector.leading


def configure() -> None:
    """Register handlers and the start-up/clean-up hooks; idempotent per process."""
    for controller in CONTROLLERS:
        controller.register()

    @kopf.on.startup()
    async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        # progress and diff-base live in annotations: our status schemas are strict, and
        # kopf's default `status.kopf` field would be pruned by the API server
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="cocoon.dev")
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="cocoon.dev", key="last-handled-configuration"
        )
        settings.persistence.finalizer = "cocoon.dev/finalizer"
        settings.watching.server_timeout = 60
        settings.watching.client_timeout = 90
        settings.watching.inactivity_timeout = 300
        settings.posting.level = logging.INFO
        settings.batching.error_delays = [1, 2, 5, 10, 30]
        memo.resync = [
            *_start_passes(memo),
            *nodes.follow(memo, memo.schedules["attestation"]),
        ]

    @kopf.on.cleanup()
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        tasks = [*(memo.get("resync") or []), *channel_chain.payments(memo).tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def prepare(memo: kopf.Memo) -> None:
    """What every replica needs: the API client, settings, and the HTTP API."""
    memo.kube = await Kube.connect()
    memo.settings = operator_settings.from_env()
    memo.schedules = loops.schedules(os.environ)
    memo.attestation = attestednode.AttestationState.from_env()
    # kopf hands each object a shallow copy of this memo: shared state must exist before
    memo.views = views.Views()
    memo.caches = memo.views.caches()
    memo.attestation.policies = policies.PolicyCache(
        memo.views.policies.store, memo.schedules["attestation"].interval_s
    )
    memo.payments = channel_chain.Payments.from_env()
    memo.leading = partial(leading, memo)
    memo.view_tasks = memo.views.start(memo.kube)
    memo.api = await httpapi.start(
        httpapi.ServerSettings.from_env(),
        [
            partial(meter_api.setup_routes, memo=memo),
            *(
                partial(c.setup_routes, memo=memo)
                for c in CONTROLLERS
                if hasattr(c, "setup_routes")
            ),
        ],
    )


async def serve(args: argparse.Namespace) -> int:
    memo = kopf.Memo()
    await prepare(memo)
    elector = None
    if os.environ.get("COCOON_LEADER_ELECTION", "true") != "false":
        elector = memo.elector = leader.Elector.from_env(memo.kube)
    keeper: asyncio.Task[None] | None = None
    try:
        if elector is not None:
            await elector.acquire()
            keeper = asyncio.create_task(elector.keep_apart(Kube.connect))
        await kopf.operator(
            clusterwide=not args.namespace,
            namespaces=args.namespace or [],
            standalone=True,
            liveness_endpoint=args.liveness,
            memo=memo,
            stop_flag=elector.lost if elector is not None else None,
        )
        return LOST_LEADERSHIP if elector is not None and elector.lost.is_set() else 0
    finally:
        if keeper is not None and elector is not None:
            elector.stop_renewing()
            await asyncio.gather(keeper, return_exceptions=True)
        if elector is not None and not elector.lost.is_set():
            await elector.release()
        await memo.api.cleanup()
        for task in memo.view_tasks:
            task.cancel()
        await asyncio.gather(*memo.view_tasks, return_exceptions=True)
        memo.attestation.appraiser.close()
        await memo.kube.close()


def name_for_peering() -> None:
    """kopf names this process from POD_ID, else from `getpass.getuser()`, which raises KeyError
    for a uid without a passwd entry (the image's 65532): a pod's host name is its name."""
    os.environ.setdefault("POD_ID", socket.gethostname())


def _run(args: argparse.Namespace) -> int:
    name_for_peering()
    logs.configure(logging.DEBUG if args.verbose else logging.INFO)
    # the client logs whole response bodies at DEBUG, Secrets included: never let it
    logging.getLogger("kubernetes_asyncio").setLevel(logging.WARNING)
    configure()
    try:  # the provider's TON settings are checked before anything starts
        channel_chain.Payments.from_env()
    except networks.ProviderConfigError as exc:
        print(f"cocoon operator: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(serve(args))


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--namespace", "-n", action="append", help="watch only these namespaces (default: all)"
    )
    parser.add_argument(
        "--liveness",
        default=None,
        help="serve kopf's liveness probe on the leader, e.g. http://0.0.0.0:8080/healthz",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    parser.set_defaults(handler=_run)
