"""The whole channel lifecycle from Python, against the emulator (the real TVM) over the
toncenter v2 subset: wallets deploy and fund, externals claim, close and withdraw."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pytoniq.contract.contract import Contract

from cocoon import keys
from cocoon.ton import emulator, promises
from cocoon.ton.chain import ChainTimeout, MessageRejected
from cocoon.ton.channel import (
    STORAGE_RESERVE,
    ChannelConfig,
    ExitCode,
    State,
    Tag,
    claim_body,
    new_channel_id,
)
from cocoon.ton.client import ChannelError, InvalidPromise, PaymentChannel
from cocoon.ton.toncenter import ToncenterChain
from cocoon.ton.tvm import boc
from cocoon.ton.units import TON
from cocoon.ton.wallet import InsufficientFunds, Wallet

from .conftest import funded_wallet

pytestmark = pytest.mark.chain
CLOSE_DELAY = 600


async def open_channel(
    chain: ToncenterChain, url: str, deposit: int = 10 * TON
) -> tuple[PaymentChannel, Ed25519PrivateKey, Wallet, Wallet]:
    payer_key = keys.generate()
    payer = Wallet(chain, payer_key)
    await emulator.faucet(url, payer.address, 100 * TON)
    payee = await funded_wallet(chain, url, 0)
    config = ChannelConfig(keys.public_bytes(payer_key), new_channel_id(), CLOSE_DELAY,
                           payer.address, payee.address)
    channel = PaymentChannel(chain, config)
    tx = await channel.deploy(payer, deposit)
    assert tx.success
    return channel, payer_key, payer, payee


def sign(channel: PaymentChannel, key: Ed25519PrivateKey, cumulative: int,
         tag: Tag = Tag.PROMISE) -> promises.Promise:
    return promises.sign(key, channel.address, channel.config.channel_id, cumulative, tag)


async def test_lifecycle(chain: ToncenterChain, emulator_url: str) -> None:
    channel, key, payer, payee = await open_channel(chain, emulator_url)
    state = await channel.state()
    assert state.state == State.OPEN
    assert state.deposited < 10 * TON - STORAGE_RESERVE
    assert state.payer == payer.address and state.payee == payee.address

    await channel.top_up(payer, 2 * TON)
    assert (await channel.state()).deposited > state.deposited + 2 * TON - TON // 100

    first = sign(channel, key, 3 * TON)
    tx = await channel.claim(first)
    assert tx is not None and tx.success
    assert await channel.claim(first) is None, "a covered promise is not sent again"
    payee_balance = (await chain.account(payee.address)).balance
    assert 3 * TON - TON // 100 < payee_balance < 3 * TON

    await channel.start_close(key)
    closing = await channel.state()
    assert closing.state == State.CLOSING
    assert closing.close_deadline >= await chain.now() + CLOSE_DELAY - 5
    with pytest.raises(ChannelError) as early:
        await channel.withdraw()
    assert early.value.exit_code == ExitCode.TOO_EARLY

    assert await channel.claim(sign(channel, key, 4 * TON)) is not None, "claims during the delay"
    await emulator.travel(emulator_url, CLOSE_DELAY)
    before = (await chain.account(payer.address)).balance
    await channel.withdraw()
    final = await channel.state()
    assert final.state == State.CLOSED and final.claimed == 4 * TON
    refund = (await chain.account(payer.address)).balance - before
    assert refund >= final.deposited - final.claimed

    with pytest.raises(ChannelError):
        await channel.claim(sign(channel, key, 5 * TON))


async def test_invalid_promises_are_refused_before_sending(
    chain: ToncenterChain, emulator_url: str
) -> None:
    channel, key, _, _ = await open_channel(chain, emulator_url)
    with pytest.raises(InvalidPromise, match="bad signature"):
        await channel.claim(sign(channel, keys.generate(), TON))
    with pytest.raises(InvalidPromise):
        await channel.claim(sign(channel, key, TON, Tag.COOP_CLOSE))


async def test_the_contract_rejects_stale_and_oversized_externals(
    chain: ToncenterChain, emulator_url: str
) -> None:
    channel, key, _, _ = await open_channel(chain, emulator_url)
    await channel.claim(sign(channel, key, 2 * TON))
    balance = (await chain.account(channel.address)).balance
    for cumulative, code in ((TON, ExitCode.STALE_PROMISE), (100 * TON, ExitCode.ABOVE_DEPOSIT)):
        body = claim_body(cumulative, sign(channel, key, cumulative).signature)
        message = Contract.create_external_msg(dest=channel.address, body=body)
        with pytest.raises(MessageRejected) as rejected:
            await chain.send_boc(boc(message.serialize()))
        assert rejected.value.exit_code == code
    assert (await chain.account(channel.address)).balance == balance


async def test_internal_claim_and_cooperative_close(
    chain: ToncenterChain, emulator_url: str
) -> None:
    channel, key, payer, payee = await open_channel(chain, emulator_url)
    await emulator.faucet(emulator_url, payee.address, TON)
    await channel.claim_via(payee, sign(channel, key, TON))
    assert (await channel.state()).claimed == TON

    payer_before = (await chain.account(payer.address)).balance
    await channel.cooperative_close(payee, sign(channel, key, 3 * TON, Tag.COOP_CLOSE))
    state = await channel.state()
    assert state.state == State.CLOSED and state.claimed == 3 * TON
    assert (await chain.account(payer.address)).balance - payer_before > 6 * TON


async def test_unfunded_wallet_and_missing_channel(
    chain: ToncenterChain, emulator_url: str
) -> None:
    poor = await funded_wallet(chain, emulator_url, TON // 100)
    config = ChannelConfig(bytes(32), new_channel_id(), 60, poor.address, poor.address)
    channel = PaymentChannel(chain, config)
    with pytest.raises(InsufficientFunds, match="send TON"):
        await channel.deploy(poor, TON)
    with pytest.raises(ChannelError, match="not deployed"):
        await channel.state()


async def test_waiting_for_a_transaction_times_out(
    chain: ToncenterChain, emulator_url: str
) -> None:
    wallet = await funded_wallet(chain, emulator_url, TON)
    with pytest.raises(ChainTimeout):
        await chain.wait_for_transaction(wallet.address, lambda _: False, limit_s=0.3,
                                         poll_interval=0.05)


async def test_promise_key_rotation(chain: ToncenterChain, emulator_url: str) -> None:
    """The payer's wallet rotates the promise key; promises the payee holds from the retired key
    stay payable for the close delay, then only the new key signs."""
    channel, old, payer, _ = await open_channel(chain, emulator_url)
    held = sign(channel, old, 2 * TON)  # signed before the rotation, not yet claimed
    new = keys.generate()
    stranger = await funded_wallet(chain, emulator_url, TON)
    with pytest.raises(ChannelError) as refused:
        await channel.rotate_key(stranger, keys.public_bytes(new))
    assert refused.value.exit_code == ExitCode.NOT_PAYER
    tx = await channel.rotate_key(payer, keys.public_bytes(new))
    assert tx.success
    assert (await channel.state()).payer_key == keys.public_bytes(new)

    assert (await channel.claim(held)) is not None
    assert (await channel.claim(sign(channel, new, 3 * TON))) is not None
    assert (await channel.state()).claimed == 3 * TON
    await emulator.travel(emulator_url, CLOSE_DELAY)
    with pytest.raises(InvalidPromise):  # the local check: neither the address key nor current
        await channel.claim(sign(channel, keys.generate(), 4 * TON))
    with pytest.raises(ChannelError) as late:  # the retired key, after its window
        await channel.claim(sign(channel, old, 4 * TON))
    assert late.value.exit_code == ExitCode.BAD_SIGNATURE
