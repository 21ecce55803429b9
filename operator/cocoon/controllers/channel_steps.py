"""The steps of a PaymentChannel pass: observe the channel (spec, status, chain), let
`accounting.next_action` decide, perform exactly that step, persist what it learnt, repeat.

Crash safety comes from the order of writes: the channel id and parameters are persisted before
the deploy, a promise before any claim uses it, and everything else is re-read from the chain.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import Counter

from cocoon import keys
from cocoon.api.common import ConditionStatus
from cocoon.api.paymentchannel import (
    ChannelParameters,
    PaymentChannelSpec,
    PaymentChannelStatus,
    SigningMode,
    Transaction,
)
from cocoon.controllers import (
    channel_chain,
    channel_secrets,
)
from cocoon.controllers.channel_chain import Payments, network_of
from cocoon.controllers.channel_conditions import (
    ABANDON_ANNOTATION,
    Observed,
    Update,
)
from cocoon.controllers.channel_secrets import RETRY_S, Blocked
from cocoon.kube import INFERENCE_POOLS, PAYMENT_CHANNELS, Kube, Obj
from cocoon.meter.pricing import Price
from cocoon.ton import accounting, price_bounds, promises
from cocoon.ton.accounting import Action, Step
from cocoon.ton.chain import Chain, ChainError, TxInfo
from cocoon.ton.channel import ChannelConfig, ExitCode, new_channel_id
from cocoon.ton.client import ChannelError, PaymentChannel
from cocoon.ton.settlement import check_promise
from cocoon.ton.tvm import Address, raw, user_friendly
from cocoon.ton.wallet import Wallet, wallet_address

logger = logging.getLogger(__name__)

# Managed signing: a new value asks the operator to rotate the channel's promise key on chain.
ROTATE_ANNOTATION = "cocoon.dev/rotate-promise-key"
MAX_STEPS = 12

# bounded labels: the operation is one of accounting.Step, the result ok or failed
CHAIN_OPERATIONS = Counter(
    "cocoon_channel_operations_total",
    "On-chain operations the operator performed for payment channels, by kind and result.",
    ["operation", "result"],
)


async def observe(kube: Kube, chain: Chain, namespace: str, name: str, deleting: bool) -> Observed:
    body = await kube.get(PAYMENT_CHANNELS, name, namespace)
    spec = PaymentChannelSpec.model_validate(body["spec"])
    status = PaymentChannelStatus.model_validate(body.get("status") or {})
    config = channel_chain.config_of(status)
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
            in_flight = await channel_chain.deploy_in_flight(chain, channel.config)
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


def tx_entry(kind: str, tx: TxInfo) -> Obj:
    at = datetime.fromtimestamp(tx.utime, UTC)
    return Transaction(kind=kind, hash=tx.hash.hex(), at=at).to_api()


async def prepare(ref: Ref, obs: Observed, state: Payments) -> None:
    """Choose the channel id and persist what its address commits to, before any deploy."""
    kube, namespace = ref.kube, ref.namespace
    payee = channel_chain.payee(state)
    network = network_of(state, obs.spec.network).name
    if obs.spec.payer.signing is SigningMode.MANAGED:
        wallet = keys.public_bytes(
            await channel_chain.load_wallet_key(kube, namespace, obs.spec, None)
        )
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


async def perform(
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
            fields["lastTransaction"] = tx_entry("claim", tx)
        await ref.patch_status(fields)
        return
    if step in (Step.DEPLOY, Step.TOP_UP):
        wallet = Wallet(channel.chain, await key(step))
        if step is Step.DEPLOY:
            tx = await channel.deploy(wallet, action.amount)
        else:
            tx = await channel.top_up(wallet, action.amount)
        await ref.patch_status(
            {"lastTransaction": tx_entry("deploy" if step is Step.DEPLOY else "topup", tx)}
        )
        return
    if step is Step.ROTATE_KEY:
        await rotate(ref, obs, await key(step))
        return
    if step is Step.START_CLOSE:
        tx = await channel.start_close(await key(step))
        await ref.patch_status({"lastTransaction": tx_entry("close", tx)})
        return
    if step is Step.WITHDRAW:
        tx = await channel.withdraw()
        await ref.patch_status({"lastTransaction": tx_entry("withdraw", tx)})
        return
    raise AssertionError(f"not an acting step: {step}")


async def rotate(ref: Ref, obs: Observed, wallet_key: Ed25519PrivateKey) -> None:
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
        fields["lastTransaction"] = tx_entry("rotate", tx)
    await ref.patch_status(
        fields | {"promiseKey": new.hex(), "promiseKeySecret": secret, "promiseKeyRotation": token}
    )


async def run_steps(ref: Ref, chain: Chain, deleting: bool, state: Payments) -> Observed:
    obs = await observe(ref.kube, chain, ref.namespace, ref.name, deleting)

    async def key(step: Step) -> Ed25519PrivateKey:
        """The wallet key funds and rotates; the channel's promise key in force signs promises
        and the close."""
        status = obs.status
        if step in (Step.DEPLOY, Step.TOP_UP, Step.ROTATE_KEY):
            return await channel_chain.load_wallet_key(
                ref.kube, ref.namespace, obs.spec, status.parameters
            )
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
            await prepare(ref, obs, state)
        else:
            try:
                await perform(ref, obs, action, key)
            except ChainError:
                CHAIN_OPERATIONS.labels(action.step.value, "failed").inc()
                raise
            CHAIN_OPERATIONS.labels(action.step.value, "ok").inc()
        obs = await observe(ref.kube, chain, ref.namespace, ref.name, deleting)
    return obs
