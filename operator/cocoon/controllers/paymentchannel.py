"""kopf handlers for PaymentChannel: observe the channel, let `accounting.next_action` decide,
do that one step, persist, repeat.

Crash safety comes from the order of writes: the channel id and parameters are persisted before
the deploy, a promise before any claim uses it, and everything else is re-read from the chain,
where deploys are detected, top-ups are level-based and claims are idempotent.
Deletion closes the channel through kopf's finalizer; the annotation
`cocoon.dev/abandon-channel=true` releases it when the chain is gone for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import Counter
from pydantic import ValidationError

from cocoon import keys
from cocoon.api.common import ConditionStatus
from cocoon.api.paymentchannel import (
    ChannelParameters,
    ChannelState,
    PaymentChannelSpec,
    PaymentChannelStatus,
    SigningMode,
    Transaction,
)
from cocoon.controllers import channel_ledger, channel_secrets, loops, usage_api
from cocoon.controllers import status as status_writer
from cocoon.controllers.channel_secrets import RETRY_S, Blocked, secret_value
from cocoon.kube import CONFIGMAPS, INFERENCE_POOLS, PAYMENT_CHANNELS, Kube, Obj
from cocoon.meter.pricing import Price
from cocoon.ton import accounting, connect, keyfile, networks, price_bounds, promises
from cocoon.ton.accounting import Action, Step
from cocoon.ton.chain import Chain, ChainError, TxInfo
from cocoon.ton.channel import ChannelConfig, ExitCode, State, new_channel_id
from cocoon.ton.client import ChannelError, PaymentChannel
from cocoon.ton.settlement import check_promise
from cocoon.ton.tvm import Address, raw, user_friendly
from cocoon.ton.wallet import InsufficientFunds, Wallet, wallet_address

logger = logging.getLogger(__name__)

ABANDON_ANNOTATION = "cocoon.dev/abandon-channel"
# Managed signing: a new value asks the operator to rotate the channel's promise key on chain.
ROTATE_ANNOTATION = "cocoon.dev/rotate-promise-key"
MAX_STEPS = 12
CLOSE_POLL_S = float(os.environ.get("COCOON_CHANNEL_POLL_SECONDS", "10"))
_STATES = {
    State.OPEN: ChannelState.OPEN,
    State.CLOSING: ChannelState.CLOSING,
    State.CLOSED: ChannelState.CLOSED,
}
Update = tuple[str, ConditionStatus, str, str]

# bounded labels: the operation is one of accounting.Step, the result ok or failed
CHAIN_OPERATIONS = Counter(
    "cocoon_channel_operations_total",
    "On-chain operations the operator performed for payment channels, by kind and result.",
    ["operation", "result"],
)


@dataclass
class Payments:
    """Process-wide state of the payments area (kept in kopf's memo)."""

    catalog: networks.Catalog = field(default_factory=networks.Catalog)
    payout_address: str = ""  # raw form, checksum checked at start
    locks: defaultdict[tuple[str, str], asyncio.Lock] = field(
        default_factory=lambda: defaultdict(asyncio.Lock)
    )
    pending: set[tuple[str, str]] = field(default_factory=set)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    def from_env(cls) -> Payments:
        """The provider's settings; raises `networks.ProviderConfigError` when unusable, so a
        bad payout address stops the operator at start instead of failing every channel."""
        return cls(
            catalog=networks.catalog_from_env(os.environ),
            payout_address=networks.payout_from_env(os.environ),
        )

    @classmethod
    def for_url(cls, url: str, payout_address: str = "") -> Payments:
        return cls(catalog=networks.Catalog.single(url), payout_address=payout_address)


def payments(memo: kopf.Memo) -> Payments:
    state: Payments | None = memo.get("payments")
    if state is None:
        state = memo.payments = Payments.from_env()
    return state


# -- reading ------------------------------------------------------------------------------------


def network_of(state: Payments, name: str) -> networks.Network:
    network = state.catalog.find(name)
    if network is None:
        offered = ", ".join(state.catalog.names()) or "none"
        raise Blocked(
            "NetworkUnknown",
            f"spec.network {name or '(default)'!r} is not a network this provider offers "
            f"(offered: {offered}); create the channel again naming one of them.",
        )
    return network


async def open_chain(kube: Kube, network: networks.Network) -> Chain:
    """The provider's chain: its Secrets and ConfigMaps live in the operator's namespace, and
    nothing a tenant wrote is ever an endpoint."""
    home = os.environ.get("COCOON_NAMESPACE", "cocoon-system")
    api_key = None
    if network.api_key_secret_ref is not None:
        ref = network.api_key_secret_ref
        api_key = await secret_value(kube, home, ref.name, ref.key)
    config = None
    if network.kind is networks.NetworkKind.LITESERVER:
        cm = await kube.get_or_none(CONFIGMAPS, network.config_map_name, home)
        config = ((cm or {}).get("data") or {}).get(connect.GLOBAL_CONFIG_KEY)
    return await connect.open_chain(network, api_key=api_key, global_config=config)


async def _load_wallet_key(
    kube: Kube, namespace: str, spec: PaymentChannelSpec, params: ChannelParameters | None
) -> Ed25519PrivateKey:
    """The payer's wallet key (Managed): it only funds the channel; promises are signed with
    the channel's own promise key."""
    ref = spec.payer.key_secret_ref
    assert ref is not None  # the spec validator requires it for Managed signing
    text = await secret_value(kube, namespace, ref.name, ref.key)
    if text is None:
        raise Blocked(
            "PayerKeyMissing",
            f"Secret {namespace}/{ref.name} has no key {ref.key!r}; "
            "create it with `cocoon ton keygen --json-out` (the same key owns the "
            "payer's wallet).",
        )
    try:
        key = connect.payer_key(text)
    except keyfile.KeyFileError as exc:
        raise Blocked("PayerKeyInvalid", f"Secret {namespace}/{ref.name}: {exc}.") from exc
    if params is not None and raw(wallet_address(keys.public_bytes(key))) != params.payer:
        raise Blocked(
            "PayerKeyChanged",
            f"Secret {namespace}/{ref.name} now holds another key "
            "than the one this channel was deployed with; restore the original key.",
        )
    return key


def _payee(state: Payments) -> str:
    if not state.payout_address:
        raise Blocked(
            "PayeeUnknown",
            "The provider has not set its payout address, so no channel can be prepared: "
            "helm upgrade ... --set payout.address=<TON address>.",
        )
    return state.payout_address


def _config(status: PaymentChannelStatus) -> ChannelConfig | None:
    params = status.parameters
    if params is None or not status.channel_id:
        return None
    return ChannelConfig(
        payer_key=bytes.fromhex(params.payer_public_key),
        channel_id=int(status.channel_id, 16),
        close_delay=params.close_delay_seconds,
        payer=Address(params.payer),
        payee=Address(params.payee),
    )


async def _deploy_in_flight(chain: Chain, config: ChannelConfig) -> bool:
    """The payer's wallet already sent to the channel address, but nothing arrived yet."""
    if (await chain.account(config.address())).balance > 0:
        return False
    sent = await chain.transactions(config.payer)
    return any(dest == config.address() for tx in sent for dest, _ in tx.out_values)


@dataclass
class Observed:
    body: Obj
    spec: PaymentChannelSpec
    status: PaymentChannelStatus
    view: accounting.ChannelView
    channel: PaymentChannel | None


async def _observe(kube: Kube, chain: Chain, namespace: str, name: str, deleting: bool) -> Observed:
    body = await kube.get(PAYMENT_CHANNELS, name, namespace)
    spec = PaymentChannelSpec.model_validate(body["spec"])
    status = PaymentChannelStatus.model_validate(body.get("status") or {})
    config = _config(status)
    channel = PaymentChannel(chain, config) if config else None
    on_chain = None
    in_flight = False
    now = int(datetime.now(UTC).timestamp())
    if channel is not None:
        now = await chain.now()
        if await channel.deployed():
            st = await channel.state()
            on_chain = accounting.OnChain(st.state, st.deposited, st.claimed, st.close_deadline)
        elif spec.payer.signing is SigningMode.MANAGED:
            in_flight = await _deploy_in_flight(chain, channel.config)
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    view = accounting.ChannelView(
        managed=spec.payer.signing is SigningMode.MANAGED,
        deleting=deleting,
        abandon=annotations.get(ABANDON_ANNOTATION) == "true",
        prepared=config is not None,
        chain=on_chain,
        deploy_in_flight=in_flight,
        target_deposit=int(spec.deposit),
        owed=int(status.owed),
        promised=int(status.latest_promise.cumulative) if status.latest_promise else 0,
        last_claim_at=int(status.last_claim_at.timestamp()) if status.last_claim_at else None,
        now=now,
        policy=accounting.claim_policy(int(spec.claim.threshold), spec.claim.interval_seconds),
        rotate_key=annotations.get(ROTATE_ANNOTATION, "") not in ("", status.promise_key_rotation),
    )
    return Observed(body, spec, status, view, channel)


# -- acting -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ref:
    """One channel and the client to reach it."""

    kube: Kube
    namespace: str
    name: str

    async def patch_status(self, fields: Obj) -> None:
        await self.kube.patch(
            PAYMENT_CHANNELS, self.name, {"status": fields}, self.namespace, subresource="status"
        )


def _tx(kind: str, tx: TxInfo) -> Obj:
    at = datetime.fromtimestamp(tx.utime, UTC)
    return Transaction(kind=kind, hash=tx.hash.hex(), at=at).to_api()


async def _prepare(ref: Ref, obs: Observed, state: Payments) -> None:
    """Choose the channel id and persist what its address commits to, before any deploy."""
    kube, namespace = ref.kube, ref.namespace
    payee = _payee(state)
    network = network_of(state, obs.spec.network).name
    if obs.spec.payer.signing is SigningMode.MANAGED:
        wallet = keys.public_bytes(await _load_wallet_key(kube, namespace, obs.spec, None))
        public = keys.public_bytes(await channel_secrets.ensure_promise_key(kube, obs.body))
    else:
        assert obs.spec.payer.public_key is not None
        public = wallet = bytes.fromhex(obs.spec.payer.public_key)
    params = ChannelParameters(
        payer_public_key=public.hex(),
        payer=raw(wallet_address(wallet)),
        payee=payee,
        close_delay_seconds=obs.spec.close_delay_seconds,
    )
    channel_id = new_channel_id()
    config = ChannelConfig(
        public, channel_id, params.close_delay_seconds, Address(params.payer), Address(params.payee)
    )
    await ref.patch_status(
        {
            "channelId": f"{channel_id:032x}",
            "address": user_friendly(config.address()),
            "parameters": params.to_api(),
            "network": network,
        }
    )


async def pin_max_price(kube: Kube, body: Obj, spec: PaymentChannelSpec) -> Update:
    """Pin the most the channel pays per unit, once: spec.maxPrice, else the pool's price the
    first time the pool is seen (until then meters give the channel no credit); and say
    whether the pool's price now is within it."""
    meta = body["metadata"]
    pool = await kube.get_or_none(INFERENCE_POOLS, spec.pool_name, meta["namespace"])
    price = Price.model_validate(((pool or {}).get("spec") or {}).get("price") or {})
    pinned = (body.get("status") or {}).get("maxPrice")
    ceiling = Price.model_validate(pinned) if pinned else spec.max_price
    if ceiling is None and pool is not None:
        ceiling = price
    if ceiling is not None and not pinned:
        await kube.patch(
            PAYMENT_CHANNELS,
            meta["name"],
            {"status": {"maxPrice": ceiling.to_api()}},
            meta["namespace"],
            subresource="status",
        )
    if pool is None or ceiling is None:
        return (
            "PriceAccepted",
            ConditionStatus.FALSE,
            "PoolNotFound",
            f"InferencePool {spec.pool_name} does not exist; its price is pinned as the "
            "channel's maxPrice when it does (or set spec.maxPrice).",
        )
    over = price_bounds.above_max(price, ceiling)
    if over:
        return (
            "PriceAccepted",
            ConditionStatus.FALSE,
            "PriceAboveMax",
            f"The pool's price exceeds status.maxPrice for {', '.join(over)}; its meters do not "
            "serve this channel (callers get 409). Create a channel with a higher spec.maxPrice.",
        )
    return (
        "PriceAccepted",
        ConditionStatus.TRUE,
        "WithinMaxPrice",
        "The pool's price is within status.maxPrice.",
    )


async def _perform(
    ref: Ref, obs: Observed, action: Action, key: Callable[[Step], Awaitable[Ed25519PrivateKey]]
) -> None:
    channel = obs.channel
    assert channel is not None
    step = action.step
    if step is Step.SIGN_PROMISE:
        previous = obs.view.promised
        deposited = obs.view.chain.deposited if obs.view.chain else 0
        check_promise(previous, action.amount, deposited)
        signed = promises.sign(
            await key(step), channel.address, channel.config.channel_id, action.amount
        )
        # persisted before anything uses it: a crash after this re-claims the same promise
        await ref.patch_status(
            {
                "latestPromise": {
                    "cumulative": str(signed.cumulative),
                    "signature": signed.signature.hex(),
                }
            }
        )
        return
    if step is Step.CLAIM:
        latest = obs.status.latest_promise
        assert latest is not None
        promise = promises.Promise(
            channel.address,
            channel.config.channel_id,
            int(latest.cumulative),
            bytes.fromhex(latest.signature),
        )
        tx = await channel.claim(promise)
        fields: Obj = {"lastClaimAt": datetime.fromtimestamp(obs.view.now, UTC).isoformat()}
        if tx is not None:
            fields["lastTransaction"] = _tx("claim", tx)
        await ref.patch_status(fields)
        return
    if step in (Step.DEPLOY, Step.TOP_UP):
        wallet = Wallet(channel.chain, await key(step))
        if step is Step.DEPLOY:
            tx = await channel.deploy(wallet, action.amount)
        else:
            tx = await channel.top_up(wallet, action.amount)
        await ref.patch_status(
            {"lastTransaction": _tx("deploy" if step is Step.DEPLOY else "topup", tx)}
        )
        return
    if step is Step.ROTATE_KEY:
        await _rotate(ref, obs, await key(step))
        return
    if step is Step.START_CLOSE:
        tx = await channel.start_close(await key(step))
        await ref.patch_status({"lastTransaction": _tx("close", tx)})
        return
    if step is Step.WITHDRAW:
        tx = await channel.withdraw()
        await ref.patch_status({"lastTransaction": _tx("withdraw", tx)})
        return
    raise AssertionError(f"not an acting step: {step}")


async def _rotate(ref: Ref, obs: Observed, wallet_key: Ed25519PrivateKey) -> None:
    """Make a fresh key the channel's promise key on chain, then record it. Re-run safe: the
    key's Secret is named after the request, and the chain says whether it is in force."""
    channel = obs.channel
    assert channel is not None and obs.status.parameters is not None
    token = ((obs.body.get("metadata") or {}).get("annotations") or {})[ROTATE_ANNOTATION]
    secret = channel_secrets.rotated_secret_name(ref.name, token)
    new = keys.public_bytes(await channel_secrets.ensure_promise_key(ref.kube, obs.body, secret))
    current = obs.status.promise_key or obs.status.parameters.payer_public_key
    fields: Obj = {}
    on_chain = (await channel.state()).payer_key
    if on_chain != new:
        if on_chain.hex() != current:
            raise Blocked(
                "PromiseKeyMismatch",
                "The channel's key on chain is neither the recorded one nor the requested one; "
                "nothing was rotated.",
            )
        try:
            tx = await channel.rotate_key(Wallet(channel.chain, wallet_key), new)
        except ChannelError as exc:
            if exc.exit_code == ExitCode.TOO_EARLY:
                raise Blocked(
                    "RotationTooEarly",
                    "The promise key was rotated less than closeDelaySeconds ago; the retired "
                    "key must stay payable until then. Retry after that.",
                    retry_s=max(RETRY_S, obs.spec.close_delay_seconds // 4),
                ) from exc
            raise
        fields["lastTransaction"] = _tx("rotate", tx)
    await ref.patch_status(
        fields | {"promiseKey": new.hex(), "promiseKeySecret": secret, "promiseKeyRotation": token}
    )


async def _run_steps(ref: Ref, chain: Chain, deleting: bool, state: Payments) -> Observed:
    obs = await _observe(ref.kube, chain, ref.namespace, ref.name, deleting)

    async def key(step: Step) -> Ed25519PrivateKey:
        """The wallet key funds and rotates; the channel's promise key in force signs promises
        and the close."""
        status = obs.status
        if step in (Step.DEPLOY, Step.TOP_UP, Step.ROTATE_KEY):
            return await _load_wallet_key(ref.kube, ref.namespace, obs.spec, status.parameters)
        secret = status.promise_key_secret or channel_secrets.promise_key_secret_name(ref.name)
        key = await channel_secrets.load_promise_key(ref.kube, ref.namespace, ref.name, secret)
        assert status.parameters is not None
        if keys.public_bytes(key).hex() != (
            status.promise_key or status.parameters.payer_public_key
        ):
            raise Blocked(
                "PromiseKeyChanged",
                f"Secret {ref.namespace}/{secret} holds another key than the channel's promise "
                "key in force; restore it.",
            )
        return key

    for _ in range(MAX_STEPS):
        action = accounting.next_action(obs.view)
        if action.step in (Step.NOTHING, Step.RELEASE):
            return obs
        logger.info(
            "channel %s/%s: %s (%s)", ref.namespace, ref.name, action.step.value, action.reason
        )
        if action.step is Step.PREPARE:
            await _prepare(ref, obs, state)
        else:
            try:
                await _perform(ref, obs, action, key)
            except ChainError:
                CHAIN_OPERATIONS.labels(action.step.value, "failed").inc()
                raise
            CHAIN_OPERATIONS.labels(action.step.value, "ok").inc()
        obs = await _observe(ref.kube, chain, ref.namespace, ref.name, deleting)
    return obs


# -- status -------------------------------------------------------------------------------------


def summary(obs: Observed, credential: tuple[str, str]) -> tuple[Obj, list[Update]]:
    """Status fields and conditions for what was observed at the end of a pass."""
    view, status, chain = obs.view, obs.status, obs.view.chain
    deposited = chain.deposited if chain else 0
    fields: Obj = {
        "state": (_STATES[chain.state] if chain else ChannelState.PENDING).value,
        "deposited": str(deposited),
        "claimed": str(chain.claimed if chain else 0),
        "promised": str(view.promised),
        "creditLeft": str(
            accounting.credit_left(deposited, view.promised, int(obs.spec.credit_window), view.owed)
        ),
        "closeDeadline": (
            datetime.fromtimestamp(chain.close_deadline, UTC).isoformat()
            if chain and chain.state is State.CLOSING
            else None
        ),
    }
    if credential[0]:
        fields["credentialSecret"], fields["credentialSha256"] = credential
    updates: list[Update] = [
        ("ChainReachable", ConditionStatus.TRUE, "Reachable", "The chain answered this reconcile.")
    ]
    payer = status.parameters.payer if status.parameters else ""
    updates.append(funded(view.managed, payer, chain is not None, deposited, view.target_deposit))
    if chain is not None and chain.state is State.OPEN:
        ready = (
            ConditionStatus.TRUE,
            "Open",
            f"Open at {status.address}; callers use Secret {credential[0]}.",
        )
    elif chain is not None:
        ready = (
            ConditionStatus.FALSE,
            _STATES[chain.state].value,
            f"The channel is {_STATES[chain.state].value.lower()}; it serves no requests.",
        )
    else:
        ready = (ConditionStatus.FALSE, "NotDeployed", "The channel is not deployed yet.")
    updates.append(("Ready", *ready))
    return fields, updates


def funded(
    managed: bool, payer: str, deployed: bool, deposited: int, target: int, *, seen: str = ""
) -> Update:
    """`Funded` against the target in force (the spec's deposit now, not the one last acted on);
    `seen` qualifies a deposit that was read from status instead of the chain."""
    if not deployed:
        how = "." if managed else f"; deploy and fund it from the payer's wallet {payer}."
        message = "The channel is not deployed yet" + how
        return ("Funded", ConditionStatus.FALSE, "NotDeployed", message)
    if deposited >= target:
        return (
            "Funded",
            ConditionStatus.TRUE,
            "Funded",
            f"{deposited} nanoton deposited{seen} (target {target}).",
        )
    return (
        "Funded",
        ConditionStatus.FALSE,
        "BelowDeposit",
        f"{deposited} nanoton deposited{seen}, below the target {target}.",
    )


def funded_as_last_seen(body: Obj) -> Update:
    """`Funded` when the chain cannot be read now: the last deposit seen against today's target."""
    spec, status = body.get("spec") or {}, body.get("status") or {}
    return funded(
        (spec.get("payer") or {}).get("signing", SigningMode.MANAGED.value)
        == SigningMode.MANAGED.value,
        str((status.get("parameters") or {}).get("payer") or ""),
        status.get("state", ChannelState.PENDING.value) != ChannelState.PENDING.value,
        int(status.get("deposited") or 0),
        int(spec.get("deposit") or 0),
        seen=" when the chain last answered",
    )


def awaiting_claim(status: Obj) -> str:
    """What an unreachable chain holds back, said in the status message: accepted usage that is
    not claimed on chain yet (owed less claimed as last seen), so nobody takes it for lost."""
    pending = int(status.get("owed") or 0) - int(status.get("claimed") or 0)
    return f" {pending} nanoton of accepted usage wait to be claimed." if pending > 0 else ""


def _blocked_updates(exc: Blocked) -> list[Update]:
    return [("Ready", ConditionStatus.FALSE, exc.reason, exc.message)]


def _chain_failure(exc: ChainError) -> Blocked:
    if isinstance(exc, InsufficientFunds):
        return Blocked("PayerWalletUnderfunded", f"{exc}.")
    if isinstance(exc, ChannelError):
        return Blocked("ChainRefused", f"The channel contract refused the operation: {exc}.")
    return Blocked(
        "ChainUnreachable",
        f"The chain did not answer: {exc}. Claims and top-ups wait and the operator retries; "
        "usage reports are still accepted. If the chain is gone for good "
        f"and you accept leaving the deposit on it, annotate the channel "
        f"{ABANDON_ANNOTATION}=true to release its finalizer.",
    )


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
            await _write(kube, body, {}, _blocked_updates(blocked))
            raise kopf.PermanentError(str(exc)) from exc
        if deleting and not (body.get("status") or {}).get("parameters"):
            return Action(Step.RELEASE, "NeverDeployed")  # nothing on chain: no chain needed
        try:
            credential = (
                ("", "") if deleting else await channel_secrets.ensure_credential(kube, body)
            )
            priced = None if deleting else await pin_max_price(kube, body, spec)
            pinned = (body.get("status") or {}).get("network") or spec.network
            async with await open_chain(kube, network_of(state, pinned)) as chain:
                obs = await _run_steps(Ref(kube, namespace, name), chain, deleting, state)
                book = None
                if obs.channel is not None:
                    book = await channel_ledger.record(chain, obs.channel.config, obs.status.ledger)
        except Blocked as exc:
            await _write_blocked(kube, namespace, name, exc, deleting)
            raise
        except ChainError as exc:
            blocked = _chain_failure(exc)
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
