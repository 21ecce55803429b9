"""`cocoon operator`: run every controller in one kopf process."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

import kopf

from cocoon.controllers import inferencepool
from cocoon.controllers import settings as operator_settings
from cocoon.kube import Kube

CONTROLLERS = (inferencepool,)
RESYNC_SECONDS = 30.0
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
        memo.resync = asyncio.create_task(_resync_forever(memo))

    @kopf.on.cleanup()
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        task: asyncio.Task[None] | None = memo.get("resync")
        if task is not None:
            task.cancel()
        kube: Kube | None = memo.get("kube")
        if kube is not None:
            await kube.close()


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
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
