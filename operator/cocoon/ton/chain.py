"""One small interface to a TON chain, whatever serves it (toncenter v2 HTTP, liteservers, the
local emulator). Adapters implement five primitives; waiting is written once, here."""

from __future__ import annotations

import asyncio
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from pytoniq_core.tlb.transaction import Transaction

from cocoon.ton.stack import StackValue
from cocoon.ton.tvm import Address, Cell, from_boc, parse, user_friendly


class ChainError(Exception):
    """The chain or its API failed; the message says what happened."""


class MessageRejected(ChainError):
    """The target refused an external message before accepting it (no fee was charged)."""

    def __init__(self, message: str, exit_code: int | None) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    @classmethod
    def from_error(cls, error: str) -> MessageRejected:
        match = re.search(r"exitcode=(-?\d+)", error)
        return cls(error, int(match.group(1)) if match else None)


class GetMethodFailed(ChainError):
    def __init__(self, method: str, exit_code: int) -> None:
        super().__init__(f"get-method {method} exited with code {exit_code}")
        self.exit_code = exit_code


class ChainTimeout(ChainError):
    pass


@dataclass(frozen=True)
class AccountInfo:
    status: str  # active | uninitialized | frozen
    balance: int
    last_lt: int

    @property
    def active(self) -> bool:
        return self.status == "active"


@dataclass(frozen=True)
class TxInfo:
    """What settlement needs from a transaction, parsed from its BOC the same way everywhere."""

    lt: int
    hash: bytes
    utime: int
    in_body_hash: bytes | None
    in_source: Address | None
    in_value: int
    exit_code: int | None
    success: bool
    total_fees: int
    out_values: tuple[tuple[Address | None, int], ...]
    # what the fee ledger needs: the forward fees the outgoing messages still carry (paid by
    # this account on top of total_fees), the logical times that pair a message with the
    # transactions on both ends, and the incoming body (op and amounts)
    out_fwd_fees: int = 0
    out_created_lts: tuple[int, ...] = ()
    in_created_lt: int = 0
    in_body: Cell | None = field(default=None, compare=False)
    # the account's previous transaction: where the next (older) page of history starts
    prev_lt: int = 0
    prev_hash: bytes = b""

    @classmethod
    def from_transaction(cls, tx: Transaction) -> TxInfo:
        in_msg = tx.in_msg
        info = in_msg.info if in_msg is not None else None
        compute = tx.description.compute_ph
        computed = compute is not None and compute.type_ == "vm"
        exit_code = compute.exit_code if compute is not None and computed else None
        compute_ok = compute is not None and computed and bool(compute.success)
        action = getattr(tx.description, "action", None)
        action_ok = action is None or bool(action.success)
        outs = []
        for msg in tx.out_msgs:
            dest = getattr(msg.info, "dest", None)
            outs.append((dest if isinstance(dest, Address) else None, _value_of(msg.info)))
        return cls(
            lt=tx.lt,
            hash=tx.cell.hash,
            prev_lt=tx.prev_trans_lt,
            prev_hash=tx.prev_trans_hash,
            utime=tx.now,
            in_body_hash=in_msg.body.hash if in_msg is not None else None,
            in_source=getattr(info, "src", None) if info is not None else None,
            in_value=_value_of(info) if info is not None else 0,
            exit_code=exit_code,
            success=compute_ok and action_ok and not tx.description.aborted,
            total_fees=tx.total_fees.grams,
            out_values=tuple(outs),
            out_fwd_fees=sum(int(getattr(m.info, "fwd_fee", 0) or 0) for m in tx.out_msgs),
            out_created_lts=tuple(int(getattr(m.info, "created_lt", 0) or 0) for m in tx.out_msgs),
            in_created_lt=int(getattr(info, "created_lt", 0) or 0) if info is not None else 0,
            in_body=in_msg.body if in_msg is not None else None,
        )

    @classmethod
    def from_boc(cls, boc: bytes) -> TxInfo:
        return cls.from_transaction(Transaction.deserialize(parse(from_boc(boc))))


def _value_of(info: object) -> int:
    value = getattr(info, "value_coins", None)
    return int(value) if value is not None else 0


class Chain(ABC):
    """Chain access. Adapters are async context managers owning their connections."""

    @abstractmethod
    async def account(self, address: Address) -> AccountInfo: ...

    @abstractmethod
    async def run_get_method(
        self, address: Address, method: str, stack: Sequence[int | Cell] = ()
    ) -> list[StackValue]:
        """Runs a get-method; raises GetMethodFailed on a non-zero exit code."""

    @abstractmethod
    async def send_boc(self, boc: bytes) -> None:
        """Sends a serialized external message; raises MessageRejected when it is refused."""

    @abstractmethod
    async def transactions(
        self, address: Address, limit: int = 16, start: tuple[int, bytes] | None = None
    ) -> list[TxInfo]:
        """`limit` transactions of `address`, newest first: the newest ones, or those from the
        transaction `start` (its lt and hash, included) back."""

    @abstractmethod
    async def now(self) -> int:
        """The chain's current unix time (the emulator's can run ahead of the wall clock)."""

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> Chain:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def wait_for_transaction(
        self,
        address: Address,
        match: Callable[[TxInfo], bool],
        after_lt: int = 0,
        limit_s: float = 60.0,
        poll_interval: float = 0.5,
    ) -> TxInfo:
        """The oldest transaction of `address` after `after_lt` that `match` accepts."""
        try:
            async with asyncio.timeout(limit_s):
                while True:
                    found = [tx for tx in await self.transactions(address) if tx.lt > after_lt]
                    for tx in sorted(found, key=lambda t: t.lt):
                        if match(tx):
                            return tx
                    await asyncio.sleep(poll_interval)
        except TimeoutError as exc:
            raise ChainTimeout(
                f"no matching transaction on {user_friendly(address)} within {limit_s:.0f} s; "
                "check the account on an explorer and retry"
            ) from exc
