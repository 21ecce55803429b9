"""Channel operations on any `Chain`: what the PaymentChannel controller and the CLI call.

Every call waits for the channel's own transaction and raises `ChannelError` with a reason a
human can act on when the contract refused it. Claims are idempotent: claiming a promise that
is already covered returns None instead of sending anything.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pytoniq.contract.contract import Contract
from pytoniq_core.tlb.account import StateInit

from cocoon.ton import promises
from cocoon.ton.chain import Chain, ChainError, MessageRejected, TxInfo
from cocoon.ton.channel import (
    ChannelConfig,
    ChannelState,
    ExitCode,
    Tag,
    claim_body,
    close_body,
    coop_close_body,
    rotate_key_body,
    top_up_body,
    withdraw_body,
)
from cocoon.ton.tvm import Address, Cell, boc, user_friendly
from cocoon.ton.wallet import Transfer, Wallet

INTERNAL_CLAIM_VALUE = 50_000_000  # attached to wallet-sent claims; the rest reaches the payee

_REASONS = {
    ExitCode.WRONG_STATE: "the channel state does not allow this (see `cocoon ton status`)",
    ExitCode.BAD_SIGNATURE: "bad signature: not signed by the channel's payer key for this channel",
    ExitCode.STALE_PROMISE: "the promise is not above what was already claimed",
    ExitCode.ABOVE_DEPOSIT: "the promise exceeds the deposit; top the channel up first",
    ExitCode.NOT_PAYER: "only the payer's wallet may do this",
    ExitCode.NOT_PAYEE: "only the payee's wallet may do this",
    ExitCode.TOO_EARLY: "the close delay has not elapsed yet",
    ExitCode.CLAIM_TOO_SMALL: "the claim is smaller than its own gas; wait for more to accrue",
    ExitCode.INSUFFICIENT_BALANCE: "the channel balance cannot cover the payout",
    ExitCode.UNKNOWN_OP: "the contract does not know this message",
}


class ChannelError(ChainError):
    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class InvalidPromise(ChannelError):
    """The promise cannot work on this channel; nothing was sent."""


def explain(exit_code: int | None) -> str:
    if exit_code is None:
        return "refused before execution (does the channel hold any balance?)"
    try:
        return _REASONS[ExitCode(exit_code)]
    except ValueError:
        return f"exit code {exit_code}"


class PaymentChannel:
    def __init__(self, chain: Chain, config: ChannelConfig) -> None:
        self.chain = chain
        self.config = config
        self.address = config.address()

    async def deployed(self) -> bool:
        return (await self.chain.account(self.address)).active

    async def state(self) -> ChannelState:
        if not await self.deployed():
            raise ChannelError(
                f"channel {user_friendly(self.address)} is not deployed; run `cocoon ton deploy`"
            )
        stack = await self.chain.run_get_method(self.address, "get_channel_state")
        return ChannelState.from_stack(stack)

    async def deploy(self, wallet: Wallet, amount: int) -> TxInfo:
        """Deploys the channel with its StateInit and first deposit (the payer's wallet)."""
        init = self.config.state_init()
        return await self._via_wallet(wallet, amount, top_up_body(), init, bounce=False)

    async def top_up(self, wallet: Wallet, amount: int) -> TxInfo:
        return await self._via_wallet(wallet, amount, top_up_body())

    async def claim(self, promise: promises.Promise) -> TxInfo | None:
        """Claims by external message (the payee needs no wallet); None if already covered."""
        state = await self.state()
        self._check_promise(promise, Tag.PROMISE, state.payer_key)
        if state.claimed >= promise.cumulative:
            return None
        return await self._external(claim_body(promise.cumulative, promise.signature))

    async def claim_via(self, wallet: Wallet, promise: promises.Promise) -> TxInfo | None:
        """Claims with an internal message; the attached value less gas reaches the payee."""
        state = await self.state()
        self._check_promise(promise, Tag.PROMISE, state.payer_key)
        if state.claimed >= promise.cumulative:
            return None
        body = claim_body(promise.cumulative, promise.signature)
        return await self._via_wallet(wallet, INTERNAL_CLAIM_VALUE, body)

    async def start_close(self, payer_key: Ed25519PrivateKey) -> TxInfo:
        signed = promises.sign(payer_key, self.address, self.config.channel_id, 0, Tag.CLOSE)
        return await self._external(close_body(signed.signature))

    async def withdraw(self) -> TxInfo:
        """Sends the remainder to the payer once the close delay has passed (anyone may)."""
        return await self._external(withdraw_body())

    async def cooperative_close(self, payee_wallet: Wallet, final: promises.Promise) -> TxInfo:
        """Closes at once: sent by the payee's wallet with the payer's COOP_CLOSE promise."""
        self._check_promise(final, Tag.COOP_CLOSE, (await self.state()).payer_key)
        body = coop_close_body(final.cumulative, final.signature)
        return await self._via_wallet(payee_wallet, INTERNAL_CLAIM_VALUE, body)

    async def rotate_key(self, wallet: Wallet, new_key: bytes) -> TxInfo:
        """The payer's wallet makes `new_key` the promise key (the retired one stays payable for
        the close delay, so promises the payee holds keep their value)."""
        return await self._via_wallet(wallet, INTERNAL_CLAIM_VALUE, rotate_key_body(new_key))

    def _check_promise(self, promise: promises.Promise, tag: Tag, current_key: bytes) -> None:
        """A local check before sending: the contract is the judge (it also accepts promises
        by a key retired less than the close delay ago)."""
        if promise.tag != tag or promise.channel != self.address:
            raise InvalidPromise(f"this is not a {tag.name} promise for this channel")
        if promise.channel_id != self.config.channel_id:
            raise InvalidPromise("the promise is for another channel id")
        keys = {self.config.payer_key, current_key}
        if not any(promises.verify(key, promise) for key in keys):
            raise InvalidPromise(explain(ExitCode.BAD_SIGNATURE), ExitCode.BAD_SIGNATURE)

    async def _external(self, body: Cell) -> TxInfo:
        last_lt = (await self.chain.account(self.address)).last_lt
        message = Contract.create_external_msg(dest=self.address, body=body)
        try:
            await self.chain.send_boc(boc(message.serialize()))
        except MessageRejected as exc:
            raise ChannelError(explain(exc.exit_code), exc.exit_code) from exc
        return await self.chain.wait_for_transaction(
            self.address, lambda t: t.in_body_hash == body.hash, last_lt
        )

    async def _via_wallet(
        self,
        wallet: Wallet,
        value: int,
        body: Cell,
        state_init: StateInit | None = None,
        bounce: bool = True,
    ) -> TxInfo:
        last_lt = (await self.chain.account(self.address)).last_lt
        transfer = Transfer(self.address, value, body, state_init, bounce)
        await wallet.send([transfer])
        tx = await self.chain.wait_for_transaction(
            self.address, lambda t: _from(t, wallet.address) and t.in_body_hash == body.hash,
            last_lt,
        )
        if not tx.success:
            raise ChannelError(explain(tx.exit_code), tx.exit_code)
        return tx


def _from(tx: TxInfo, sender: Address) -> bool:
    return tx.in_source is not None and tx.in_source == sender
