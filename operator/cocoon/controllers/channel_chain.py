"""Where a PaymentChannel's chain and keys come from: the provider's network catalog and payout
address (process-wide, read at start), the provider's chain endpoints in the operator's own
namespace, and the payer's wallet key from the tenant's Secret."""

from __future__ import annotations

import asyncio
import os
from collections import defaultdict
from dataclasses import dataclass, field

import kopf
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cocoon import keys
from cocoon.api.paymentchannel import ChannelParameters, PaymentChannelSpec, PaymentChannelStatus
from cocoon.controllers.channel_secrets import Blocked, secret_value
from cocoon.kube import CONFIGMAPS, Kube
from cocoon.ton import connect, keyfile, networks
from cocoon.ton.chain import Chain
from cocoon.ton.channel import ChannelConfig
from cocoon.ton.tvm import Address, raw
from cocoon.ton.wallet import wallet_address


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


async def load_wallet_key(
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


def payee(state: Payments) -> str:
    if not state.payout_address:
        raise Blocked(
            "PayeeUnknown",
            "The provider has not set its payout address, so no channel can be prepared: "
            "helm upgrade ... --set payout.address=<TON address>.",
        )
    return state.payout_address


def config_of(status: PaymentChannelStatus) -> ChannelConfig | None:
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


async def deploy_in_flight(chain: Chain, config: ChannelConfig) -> bool:
    """The payer's wallet already sent to the channel address, but nothing arrived yet."""
    if (await chain.account(config.address())).balance > 0:
        return False
    sent = await chain.transactions(config.payer)
    return any(dest == config.address() for tx in sent for dest, _ in tx.out_values)
