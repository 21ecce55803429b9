"""The payment channel's wire format in Python: code, StateInit, address, signed cells, bodies.

It mirrors `contracts/lib/channel.mjs` field for field; `tests/ton/test_golden.py` proves both
sides produce the same cells from the committed golden vectors.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from enum import IntEnum
from functools import cache
from importlib import resources

from pytoniq_core.tlb.account import StateInit

from cocoon.ton.stack import StackValue, read_address, read_int
from cocoon.ton.tvm import Address, Builder, Cell, end, from_boc

WORKCHAIN = 0


class Op(IntEnum):
    TOP_UP = 0x544F5055
    CLAIM = 0x434C4149
    CLOSE = 0x434C4F53
    WITHDRAW = 0x57445257
    COOP_CLOSE = 0x434F4F50
    ROTATE_KEY = 0x524B4559


class Tag(IntEnum):
    """First field of every cell the payer signs, so no signature passes for another kind."""

    PROMISE = 0x50524F4D
    CLOSE = 0x434C5347
    COOP_CLOSE = 0x434F4F53


class State(IntEnum):
    OPEN = 0
    CLOSING = 1
    CLOSED = 2


class ExitCode(IntEnum):
    WRONG_STATE = 101
    BAD_SIGNATURE = 102
    STALE_PROMISE = 103
    ABOVE_DEPOSIT = 104
    NOT_PAYER = 105
    NOT_PAYEE = 106
    TOO_EARLY = 107
    CLAIM_TOO_SMALL = 108
    INSUFFICIENT_BALANCE = 109
    UNKNOWN_OP = 0xFFFF


# Mirrors of the contract's constants: what a top-up keeps back and the gas it charges.
STORAGE_RESERVE = 10_000_000
TOP_UP_GAS = 4_000
EXTERNAL_CLAIM_GAS = 6_000


@dataclass(frozen=True)
class CompiledCode:
    code: Cell
    code_hash: str
    tolk_version: str


@cache
def compiled() -> CompiledCode:
    """The contract code committed beside this module (kept equal to contracts/build by CI)."""
    text = resources.files(__package__).joinpath("payment_channel.compiled.json").read_text()
    artifact = json.loads(text)
    code = from_boc(bytes.fromhex(artifact["codeBocHex"]))
    if code.hash.hex() != artifact["codeHashHex"]:
        raise ValueError("payment_channel.compiled.json: code hash does not match the BOC")
    return CompiledCode(code, artifact["codeHashHex"], artifact["tolkVersion"])


def new_channel_id() -> int:
    """128 random bits: two channels of the same parties never share an address or promises."""
    return secrets.randbits(128)


@dataclass(frozen=True)
class ChannelConfig:
    """Everything the channel's address commits to."""

    payer_key: bytes
    channel_id: int
    close_delay: int
    payer: Address
    payee: Address

    def __post_init__(self) -> None:
        if len(self.payer_key) != 32:
            raise ValueError("payer_key must be a 32-byte ed25519 public key")
        if not 0 <= self.channel_id < 1 << 128:
            raise ValueError("channel_id must fit in 128 bits")
        if not 0 <= self.close_delay < 1 << 64:
            raise ValueError("close_delay must fit in 64 bits")

    def data(self) -> Cell:
        parties = end(
            Builder()
            .store_address(self.payer)
            .store_address(self.payee)
            .store_maybe_ref(None)  # no retired promise key yet
        )
        return end(
            Builder()
            .store_bytes(self.payer_key)
            .store_uint(self.channel_id, 128)
            .store_uint(self.close_delay, 64)
            .store_uint(State.OPEN, 8)
            .store_uint(0, 64)
            .store_coins(0)
            .store_coins(0)
            .store_ref(parties)
        )

    def state_init(self) -> StateInit:
        return StateInit(code=compiled().code, data=self.data())

    def address(self) -> Address:
        return Address((WORKCHAIN, self.state_init().serialize().hash))


def signed_cell(tag: Tag, channel_id: int, channel: Address, cumulative: int) -> Cell:
    """The cell whose hash the payer signs: tag, channel id, channel address, amount."""
    return end(
        Builder()
        .store_uint(tag, 32)
        .store_uint(channel_id, 128)
        .store_address(channel)
        .store_coins(cumulative)
    )


def _body(op: Op, query_id: int, cumulative: int | None = None, signature: bytes = b"") -> Cell:
    builder = Builder().store_uint(op, 32).store_uint(query_id, 64)
    if cumulative is not None:
        builder = builder.store_coins(cumulative)
    return end(builder.store_bytes(signature))


def top_up_body(query_id: int = 0) -> Cell:
    return _body(Op.TOP_UP, query_id)


def claim_body(cumulative: int, signature: bytes, query_id: int = 0) -> Cell:
    return _body(Op.CLAIM, query_id, cumulative, signature)


def close_body(signature: bytes, query_id: int = 0) -> Cell:
    return _body(Op.CLOSE, query_id, signature=signature)


def withdraw_body(query_id: int = 0) -> Cell:
    return _body(Op.WITHDRAW, query_id)


def coop_close_body(cumulative: int, signature: bytes, query_id: int = 0) -> Cell:
    return _body(Op.COOP_CLOSE, query_id, cumulative, signature)


def rotate_key_body(new_key: bytes, query_id: int = 0) -> Cell:
    """From the payer's wallet: `new_key` (32 bytes) signs promises from now on; the retired key
    still signs payable promises for the close delay."""
    if len(new_key) != 32:
        raise ValueError("new_key must be a 32-byte ed25519 public key")
    return end(
        Builder().store_uint(Op.ROTATE_KEY, 32).store_uint(query_id, 64).store_bytes(new_key)
    )


@dataclass(frozen=True)
class ChannelState:
    """The result of the `get_channel_state` get-method."""

    state: State
    close_deadline: int
    deposited: int
    claimed: int
    balance: int
    channel_id: int
    payer_key: bytes
    close_delay: int
    payer: Address
    payee: Address

    @property
    def claimable_max(self) -> int:
        """The most a new promise may still add on top of what was claimed."""
        return self.deposited - self.claimed

    @classmethod
    def from_stack(cls, stack: list[StackValue]) -> ChannelState:
        if len(stack) != 10:
            raise ValueError(f"get_channel_state returned {len(stack)} values, expected 10")
        return cls(
            state=State(read_int(stack[0])),
            close_deadline=read_int(stack[1]),
            deposited=read_int(stack[2]),
            claimed=read_int(stack[3]),
            balance=read_int(stack[4]),
            channel_id=read_int(stack[5]),
            payer_key=read_int(stack[6]).to_bytes(32, "big"),
            close_delay=read_int(stack[7]),
            payer=read_address(stack[8]),
            payee=read_address(stack[9]),
        )
