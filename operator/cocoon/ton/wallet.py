"""A WalletV4R2 driven by external messages: how Python sends internal messages (deploy a
channel with its StateInit, top up, claim with attached value) on any chain adapter."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pytoniq.contract.contract import Contract
from pytoniq.contract.wallets.wallet import WALLET_V4_R2_CODE, WalletV4R2
from pytoniq_core.tlb.account import StateInit
from pytoniq_core.tlb.custom.wallet import WalletMessage

from cocoon import keys
from cocoon.ton.chain import Chain, ChainError, TxInfo
from cocoon.ton.stack import read_int
from cocoon.ton.tvm import Address, Builder, Cell, boc, end, user_friendly

WALLET_ID_BASE = 698983191  # the standard v4r2 subwallet id for workchain 0
PAY_FEES_SEPARATELY = 1
IGNORE_ERRORS = 2
VALID_FOR_S = 120
# What one wallet transaction burns on top of the values it sends (measured ~3 mTON).
FEE_MARGIN = 20_000_000


class InsufficientFunds(ChainError):
    """The wallet cannot cover what it was asked to send; fund it and retry."""


@dataclass(frozen=True)
class Transfer:
    dest: Address
    value: int
    body: Cell | None = None
    state_init: StateInit | None = None
    bounce: bool = True


def wallet_state_init(public_key: bytes, workchain: int = 0) -> StateInit:
    data = WalletV4R2.create_data_cell(public_key, WALLET_ID_BASE + workchain, workchain)
    return StateInit(code=WALLET_V4_R2_CODE, data=data)


def wallet_address(public_key: bytes, workchain: int = 0) -> Address:
    """The address of the v4r2 wallet a key owns, known before the wallet exists."""
    return Address((workchain, wallet_state_init(public_key, workchain).serialize().hash))


class Wallet:
    def __init__(self, chain: Chain, key: Ed25519PrivateKey, workchain: int = 0) -> None:
        self.chain = chain
        # libsodium's secret key layout (seed || public key), what pytoniq's signer expects
        self._secret = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        ) + keys.public_bytes(key)
        self.wallet_id = WALLET_ID_BASE + workchain
        self.state_init = wallet_state_init(keys.public_bytes(key), workchain)
        self.address = wallet_address(keys.public_bytes(key), workchain)

    async def seqno(self) -> int:
        if not (await self.chain.account(self.address)).active:
            return 0
        return read_int((await self.chain.run_get_method(self.address, "seqno"))[0])

    async def balance(self) -> int:
        return (await self.chain.account(self.address)).balance

    async def send(self, transfers: list[Transfer], limit_s: float = 60.0) -> TxInfo:
        """Signs and sends one external carrying `transfers`; returns the wallet's transaction."""
        account = await self.chain.account(self.address)
        needed = sum(t.value for t in transfers) + FEE_MARGIN
        if account.balance < needed:
            raise InsufficientFunds(
                f"wallet {user_friendly(self.address)} holds {account.balance} nanoton, needs "
                f"about {needed}; send TON to it (or use the emulator faucet) and retry"
            )
        seqno = await self.seqno() if account.active else 0
        messages = [
            WalletMessage(
                send_mode=PAY_FEES_SEPARATELY | IGNORE_ERRORS,
                message=Contract.create_internal_msg(
                    dest=t.dest,
                    value=t.value,
                    body=t.body if t.body is not None else end(Builder()),
                    state_init=t.state_init,
                    bounce=t.bounce,
                ),
            )
            for t in transfers
        ]
        valid_until = await self.chain.now() + VALID_FOR_S
        body = WalletV4R2.raw_create_transfer_msg(
            self._secret, seqno, self.wallet_id, messages, valid_until=valid_until
        )
        init = None if account.active else self.state_init
        external = Contract.create_external_msg(dest=self.address, state_init=init, body=body)
        await self.chain.send_boc(boc(external.serialize()))
        tx = await self.chain.wait_for_transaction(
            self.address, lambda t: t.in_body_hash == body.hash, account.last_lt, limit_s
        )
        if not tx.success:
            raise ChainError(f"wallet transaction failed (exit code {tx.exit_code})")
        return tx
