"""`cocoon operator`: run every controller in one kopf process."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from functools import partial
from typing import Any

import kopf

from cocoon import logs
from cocoon.controllers import attestednode, httpapi, inferencepool, meter_api, paymentchannel
from cocoon.controllers import settings as operator_settings
from cocoon.kube import Kube

CONTROLLERS = (inferencepool, attestednode, paymentchannel)
RESYNC_SECONDS = float(os.environ.get("COCOON_RESYNC_SECONDS", "30"))
logger = logging.getLogger(__name__)


async def _resync_forever(memo: kopf.Memo) -> None:
    """kopf timers would put a finalizer on every object; one loop for all kinds does not."""
    while True:
        await asyncio.sleep(RESYNC_SECONDS)
        for controller in CONTROLLERS:
            try:
                await controller.resync(memo)
            except Exception:
                logger.exception("resync of %s failed", controller.__name__)


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
        memo.kube = await Kube.connect()
        memo.settings = operator_settings.from_env()
        memo.attestation = attestednode.AttestationState.from_env()
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
        memo.resync = asyncio.create_task(_resync_forever(memo))

    @kopf.on.cleanup()
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        task: asyncio.Task[None] | None = memo.get("resync")
        if task is not None:
            task.cancel()
        api = memo.get("api")
        if api is not None:
            await api.cleanup()
        kube: Kube | None = memo.get("kube")
        if kube is not None:
            await kube.close()


def _run(args: argparse.Namespace) -> int:
    logs.configure(logging.DEBUG if args.verbose else logging.INFO)
    # the client logs whole response bodies at DEBUG, Secrets included: never let it
    logging.getLogger("kubernetes_asyncio").setLevel(logging.WARNING)
    configure()
    asyncio.run(
        kopf.operator(
            clusterwide=not args.namespace,
            namespaces=args.namespace or [],
            standalone=True,
            liveness_endpoint=args.liveness,
        )
    )
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--namespace", "-n", action="append", help="watch only these namespaces (default: all)"
    )
    parser.add_argument(
        "--liveness",
        default=None,
        help="serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    parser.set_defaults(handler=_run)
