"""The provider decides payee and chain; a managed channel signs with its own promise key.

Attacks: a tenant naming a chain the provider does not offer, a tenant-chosen payee (there is no
field for it any more), a checksum-invalid payout address, a swapped promise key."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cocoon import keys
from cocoon.api.paymentchannel import PaymentChannelSpec
from cocoon.controllers import channel_chain
from cocoon.controllers.channel_secrets import Blocked
from cocoon.kube import PAYMENT_CHANNELS, SECRETS
from cocoon.ton import networks
from cocoon.ton.tvm import Address, raw, user_friendly
from cocoon.ton.units import TON
from cocoon.ton.wallet import wallet_address

from .conftest import NS, Env

GOOD = raw(wallet_address(keys.public_bytes(keys.generate())))
FRIENDLY = user_friendly(Address(GOOD))
BROKEN_CHECKSUM = FRIENDLY[:-2] + ("AA" if not FRIENDLY.endswith("AA") else "BB")


@pytest.mark.parametrize(
    ("env", "payout", "catalog"),
    [
        ({}, "", []),
        ({"COCOON_PAYOUT_ADDRESS": GOOD}, GOOD, []),
        ({"COCOON_PAYOUT_ADDRESS": FRIENDLY}, GOOD, []),
        ({"COCOON_CHAIN_URL": "http://chain:8081"}, "", ["default"]),
        (
            {
                "COCOON_NETWORKS": json.dumps(
                    {
                        "default": "test",
                        "networks": [
                            {"name": "main", "kind": "Toncenter", "url": "https://a"},
                            {"name": "test", "kind": "Toncenter", "url": "https://b"},
                        ],
                    }
                ),
                "COCOON_CHAIN_URL": "http://ignored",
            },
            "",
            ["main", "test"],
        ),
    ],
)
def test_provider_settings_from_env(env: dict[str, str], payout: str, catalog: list[str]) -> None:
    assert networks.payout_from_env(env) == payout
    assert networks.catalog_from_env(env).names() == catalog


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"COCOON_PAYOUT_ADDRESS": BROKEN_CHECKSUM}, "COCOON_PAYOUT_ADDRESS"),
        ({"COCOON_PAYOUT_ADDRESS": "not-an-address"}, "COCOON_PAYOUT_ADDRESS"),
        ({"COCOON_NETWORKS": "{"}, "COCOON_NETWORKS"),
        ({"COCOON_NETWORKS": '{"default": "x", "networks": []}'}, "COCOON_NETWORKS"),
        (
            {"COCOON_NETWORKS": '{"networks": [{"name": "a", "kind": "Toncenter", "url": ""}]}'},
            "COCOON_NETWORKS",
        ),
        (
            {"COCOON_NETWORKS": '{"networks": [{"name": "a", "kind": "Liteserver"}]}'},
            "COCOON_NETWORKS",
        ),
    ],
)
def test_bad_provider_settings_stop_the_operator_with_the_value_named(
    env: dict[str, str], names: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(networks.ProviderConfigError, match=names):
        channel_chain.Payments.from_env()


def test_the_channel_spec_has_no_payee_and_no_endpoint() -> None:
    """A tenant cannot write a payee or a URL: a payee field does not exist (the API server
    prunes it, kubectl's strict validation refuses it) and a network is a name, not an object."""
    base: dict[str, Any] = {
        "poolName": "pool",
        "payer": {"keySecretRef": {"name": "payer"}},
        "deposit": "1",
    }
    PaymentChannelSpec.model_validate(base | {"network": "main"})
    spec = PaymentChannelSpec.model_validate(base | {"payeeAddress": GOOD})
    assert GOOD not in json.dumps(spec.to_api())
    with pytest.raises(ValueError, match="network"):
        PaymentChannelSpec.model_validate(
            base | {"network": {"kind": "Toncenter", "url": "http://tenant-chain"}}
        )


async def test_an_unoffered_network_blocks_before_any_chain_call(env: Env) -> None:
    env.add_channel(network="tenant-chain")
    with pytest.raises(Blocked) as blocked:
        await env.reconcile()
    assert blocked.value.reason == "NetworkUnknown"
    assert "offered: default" in blocked.value.message
    status = await env.status()
    assert "parameters" not in status and "channelId" not in status, "nothing was prepared"


async def test_the_payee_is_the_providers_payout_address(env: Env) -> None:
    env.add_channel()
    await env.reconcile()
    status = await env.status()
    assert status["parameters"]["payee"] == raw(env.payee)
    assert status["network"] == "default"


async def test_no_payout_address_prepares_nothing(env: Env) -> None:
    env.memo.payments.payout_address = ""
    env.add_channel()
    with pytest.raises(Blocked) as blocked:
        await env.reconcile()
    assert blocked.value.reason == "PayeeUnknown"
    assert "payout.address" in blocked.value.message
    assert "parameters" not in await env.status()


async def test_managed_promises_are_signed_by_the_channels_own_key(env: Env) -> None:
    env.add_channel()
    await env.reconcile()
    status = await env.status()
    wallet = keys.public_bytes(env.payer_key).hex()
    promise_key = status["parameters"]["payerPublicKey"]
    assert promise_key != wallet, "the wallet key must not sign promises"
    assert status["parameters"]["payer"] == raw(env.payer), "refunds go to the payer's wallet"
    secret = await env.kube.get(SECRETS, "ch-promise-key", NS)
    assert secret["metadata"]["ownerReferences"][0]["kind"] == "PaymentChannel"
    seed = base64.b64decode(secret["data"]["promise-key"])
    assert keys.public_bytes(Ed25519PrivateKey.from_private_bytes(seed)).hex() == promise_key
    assert int(status["deposited"]) >= 2 * TON

    # a swapped promise key is refused, not used
    stored = env.kube.objects[(SECRETS.plural, NS, "ch-promise-key")]
    stored["data"]["promise-key"] = base64.b64encode(keys.private_bytes(keys.generate())).decode()
    env.kube.objects[(PAYMENT_CHANNELS.plural, NS, "ch")]["status"]["owed"] = str(TON // 10)
    with pytest.raises(Blocked) as blocked:
        await env.reconcile()
    assert blocked.value.reason == "PromiseKeyChanged"
    assert "latestPromise" not in await env.status()


async def test_a_managed_promise_key_rotates_on_chain_and_old_promises_stay_payable(
    env: Env, api: Any
) -> None:
    from cocoon.api.paymentchannel import PaymentChannelStatus
    from cocoon.controllers.channel_chain import config_of as _config
    from cocoon.controllers.channel_steps import ROTATE_ANNOTATION
    from cocoon.ton import promises
    from cocoon.ton.client import PaymentChannel

    from .test_channel_lifecycle import signed_report

    async def report(cost: int, seq: int) -> None:
        answer = await api.post("/usage/v1/reports", json=signed_report(env.meter_key, cost, seq))
        assert answer.status == 200

    env.add_channel(claim={"threshold": str(TON * 10), "intervalSeconds": 3600})
    await env.reconcile()
    first = (await env.status())["parameters"]["payerPublicKey"]
    await report(10**8, 1)
    await env.reconcile()
    old = (await env.status())["latestPromise"]
    assert old["cumulative"] == str(10**8)

    channel = env.kube.objects[(PAYMENT_CHANNELS.plural, NS, "ch")]
    channel["metadata"]["annotations"] = {ROTATE_ANNOTATION: "2026-11"}
    await env.reconcile()
    status = await env.status()
    assert status["promiseKeyRotation"] == "2026-11"
    assert status["promiseKey"] not in ("", first)
    assert status["lastTransaction"]["kind"] == "rotate"
    assert status["parameters"]["payerPublicKey"] == first, "the address still commits to it"
    secret = await env.kube.get(SECRETS, status["promiseKeySecret"], NS)
    seed = base64.b64decode(secret["data"]["promise-key"])
    assert keys.public_bytes(Ed25519PrivateKey.from_private_bytes(seed)).hex() == status[
        "promiseKey"]

    # a promise signed by the retired key before the rotation is still payable on chain
    config = _config(PaymentChannelStatus.model_validate(status))
    assert config is not None
    onchain = PaymentChannel(env.chain, config)
    retired = await env.kube.get(SECRETS, "ch-promise-key", NS)
    retired_key = Ed25519PrivateKey.from_private_bytes(
        base64.b64decode(retired["data"]["promise-key"])
    )
    assert (await onchain.state()).claimed < 2 * 10**8
    held = promises.sign(retired_key, onchain.address, config.channel_id, 2 * 10**8)
    assert await onchain.claim(held) is not None, "signed before: still payable"
    assert (await onchain.state()).claimed == 2 * 10**8

    # the next promise is signed by the new key, and the payee can claim it
    await report(3 * 10**8, 2)
    await env.reconcile()
    latest = (await env.status())["latestPromise"]
    assert latest["cumulative"] == str(3 * 10**8)
    new = promises.Promise(onchain.address, config.channel_id, int(latest["cumulative"]),
                           bytes.fromhex(latest["signature"]))
    await onchain.claim(new)
    assert (await onchain.state()).claimed == 3 * 10**8

    # a second request within the close delay is refused by the contract, and says why
    channel["metadata"]["annotations"] = {ROTATE_ANNOTATION: "again"}
    with pytest.raises(Blocked) as early:
        await env.reconcile()
    assert early.value.reason == "RotationTooEarly"
    assert (await env.status())["promiseKeyRotation"] == "2026-11"
