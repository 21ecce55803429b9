"""kopf handlers and the reconcile pass for PaymentChannel: one channel at a time, its steps
(`channel_steps`) run under the channel's lock, then its status written (`channel_conditions`).

Deploys are detected, top-ups are level-based and claims are idempotent, so a pass can be
repeated from whatever was persisted. Deletion closes the channel through kopf's finalizer;
the annotation `cocoon.dev/abandon-channel=true` releases it when the chain is gone for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

import kopf
from aiohttp import web
from pydantic import ValidationError

from cocoon.api.common import ConditionStatus
from cocoon.api.paymentchannel import (
    PaymentChannelSpec,
)
from cocoon.controllers import (
    channel_conditions,
    channel_ledger,
    channel_secrets,
    channel_steps,
    loops,
    usage_api,
)
from cocoon.controllers import status as status_writer
from cocoon.controllers.channel_chain import network_of, open_chain, payments
from cocoon.controllers.channel_conditions import (
    ABANDON_ANNOTATION,
    Update,
    awaiting_claim,
    funded_as_last_seen,
    summary,
)
from cocoon.controllers.channel_secrets import RETRY_S, Blocked
from cocoon.kube import PAYMENT_CHANNELS, Kube, Obj
from cocoon.ton import accounting
from cocoon.ton.accounting import Action, Step
from cocoon.ton.chain import ChainError

logger = logging.getLogger(__name__)

CLOSE_POLL_S = float(os.environ.get("COCOON_CHANNEL_POLL_SECONDS", "10"))


# -- the reconcile pass -------------------------------------------------------------------------


async def reconcile(
    namespace: str, name: str, memo: kopf.Memo, *, deleting: bool = False
) -> Action:
    """One serialized pass over a channel; returns the final action (Nothing or Release)."""
    kube: Kube = memo.kube
    state = payments(memo)
    async with state.locks[(namespace, name)]:
        state.pending.discard((namespace, name))
        body = await kube.get_or_none(PAYMENT_CHANNELS, name, namespace)
        if body is None:
            return Action(Step.RELEASE, "Gone")
        try:
            spec = PaymentChannelSpec.model_validate(body["spec"])
        except ValidationError as exc:
            blocked = Blocked("InvalidSpec", f"The spec is invalid, nothing was changed: {exc}")
            await _write(kube, body, {}, channel_conditions.blocked_updates(blocked))
            raise kopf.PermanentError(str(exc)) from exc
        if deleting and not (body.get("status") or {}).get("parameters"):
            return Action(Step.RELEASE, "NeverDeployed")  # nothing on chain: no chain needed
        try:
            credential = (
                ("", "") if deleting else await channel_secrets.ensure_credential(kube, body)
            )
            priced = None if deleting else await channel_steps.pin_max_price(kube, body, spec)
            pinned = (body.get("status") or {}).get("network") or spec.network
            async with await open_chain(kube, network_of(state, pinned)) as chain:
                obs = await channel_steps.run_steps(
                    channel_steps.Ref(kube, namespace, name), chain, deleting, state
                )
                book = None
                if obs.channel is not None:
                    book = await channel_ledger.record(chain, obs.channel.config, obs.status.ledger)
        except Blocked as exc:
            await _write_blocked(kube, namespace, name, exc, deleting)
            raise
        except ChainError as exc:
            blocked = channel_conditions.chain_failure(exc)
            await _write_blocked(kube, namespace, name, blocked, deleting)
            raise blocked from exc
        fields, updates = summary(obs, credential)
        if book is not None:
            fields["ledger"] = book
        await _write(kube, obs.body, fields, [*updates, *([priced] if priced else [])])
        return accounting.next_action(obs.view)


async def _write(kube: Kube, body: Obj, fields: Obj, updates: list[Update]) -> None:
    await status_writer.write(kube, PAYMENT_CHANNELS, body, fields, updates)


async def _write_blocked(
    kube: Kube, namespace: str, name: str, exc: Blocked, deleting: bool
) -> None:
    body = await kube.get_or_none(PAYMENT_CHANNELS, name, namespace)
    if body is None:
        return
    message = exc.message
    updates = [funded_as_last_seen(body)]
    if exc.reason == "ChainUnreachable":
        message += awaiting_claim(body.get("status") or {})
        updates.append(("ChainReachable", ConditionStatus.FALSE, exc.reason, message))
    updates.append(("Ready", ConditionStatus.FALSE, exc.reason, message))
    logger.warning("channel %s/%s blocked: %s", namespace, name, exc.reason)
    await _write(kube, body, {}, updates)


def channel_timeout(memo: kopf.Memo) -> float:
    """The channels concern's per-object deadline (cancelling is as safe as a crash here)."""
    plans: dict[str, loops.Schedule] = memo.get("schedules") or loops.schedules({})
    return plans["channels"].timeout_s


def schedule(memo: kopf.Memo, namespace: str, name: str) -> None:
    """Reconcile soon (after a usage report or a client promise); at most one queued per channel.

    Only the leader acts; on a follower the leader's next channels pass picks the change up."""
    if not memo.get("leading", lambda: True)():
        return
    state = payments(memo)
    if (namespace, name) in state.pending:
        return
    state.pending.add((namespace, name))

    async def run() -> None:
        try:
            async with asyncio.timeout(channel_timeout(memo)):
                await reconcile(namespace, name, memo)
        except (Blocked, kopf.PermanentError):
            pass  # reported in the channel's status
        except TimeoutError:
            logger.warning("channel %s/%s: no result in time; retried next pass", namespace, name)
        except Exception:
            logger.exception("reconcile of channel %s/%s failed", namespace, name)

    task = asyncio.create_task(run())
    state.tasks.add(task)
    task.add_done_callback(state.tasks.discard)


async def resync(memo: kopf.Memo, schedule: loops.Schedule) -> None:
    """Level-based safety net and the claim interval's clock: every live channel, every pass,
    each under its own deadline (a chain endpoint that never answers holds only its channels)."""

    async def one(item: Obj) -> None:
        meta = item["metadata"]
        with contextlib.suppress(Blocked, kopf.PermanentError):  # reported in its status
            await reconcile(meta["namespace"], meta["name"], memo)

    # kopf's finalizer handler owns channels being deleted
    live = [
        item
        for item in await memo.kube.list(PAYMENT_CHANNELS)
        if not (item.get("metadata") or {}).get("deletionTimestamp")
    ]
    await loops.each(live, one, schedule, loops.object_label)


def setup_routes(app: web.Application, memo: kopf.Memo) -> None:
    usage_api.setup_routes(app, memo, on_change=lambda ns, name: schedule(memo, ns, name))


async def finalize(namespace: str, name: str, annotations: dict[str, str], memo: kopf.Memo) -> None:
    """Returns when the finalizer may go: closed and withdrawn, never deployed, or abandoned.

    Raises kopf.TemporaryError to be called again; the delay never exceeds CLOSE_POLL_S so an
    abandon annotation or an elapsed close delay is noticed promptly.
    """
    if annotations.get(ABANDON_ANNOTATION) == "true":
        logger.warning(
            "channel %s/%s abandoned by annotation; its funds stay on chain", namespace, name
        )
        return
    try:
        final = await reconcile(namespace, name, memo, deleting=True)
    except Blocked as exc:
        raise kopf.TemporaryError(exc.message, delay=min(exc.retry_s, CLOSE_POLL_S)) from exc
    if final.step is not Step.RELEASE:
        delay = min(max(float(final.retry_after or 1), 1.0), CLOSE_POLL_S)
        raise kopf.TemporaryError(f"closing: {final.reason}", delay=delay)


def register() -> None:
    """Attach the handlers; the delete handler is what puts kopf's finalizer on channels."""

    @kopf.on.resume("cocoon.dev", "v1alpha1", "paymentchannels")
    @kopf.on.create("cocoon.dev", "v1alpha1", "paymentchannels")
    @kopf.on.update("cocoon.dev", "v1alpha1", "paymentchannels", field="spec")
    async def channel_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        try:
            async with asyncio.timeout(channel_timeout(memo)):
                await reconcile(body.metadata.namespace or "", body.metadata.name or "", memo)
        except Blocked as exc:
            raise kopf.TemporaryError(exc.message, delay=exc.retry_s) from exc
        except TimeoutError as exc:
            raise kopf.TemporaryError("no result in time", delay=RETRY_S) from exc

    @kopf.on.delete("cocoon.dev", "v1alpha1", "paymentchannels")
    async def channel_deleted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        await finalize(
            body.metadata.namespace or "",
            body.metadata.name or "",
            dict(body.metadata.annotations or {}),
            memo,
        )
