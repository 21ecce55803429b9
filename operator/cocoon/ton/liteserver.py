"""Chain access through liteservers (pytoniq LiteBalancer), for real networks.

The global config is read from a file (e.g. a mounted ConfigMap); it is never downloaded at run
time, so what the operator trusts is what the cluster admin put there.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cocoon.ton.chain import (
    AccountInfo,
    Chain,
    ChainError,
    GetMethodFailed,
    MessageRejected,
    TxInfo,
)
from cocoon.ton.stack import StackValue
from cocoon.ton.tvm import Address, Cell, Slice, parse, slice_to_cell


def load_global_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ChainError(f"{path}: cannot read the TON global config ({exc})") from exc
    if not isinstance(config, dict) or not config.get("liteservers"):
        raise ChainError(f"{path}: not a TON global config (no liteservers)")
    return config


def _normalise(value: Any) -> StackValue:
    if isinstance(value, Slice):
        return slice_to_cell(value)
    if isinstance(value, list):
        return [_normalise(item) for item in value]
    if value is None or isinstance(value, int | Cell):
        return value
    raise ChainError(f"unsupported get-method stack value {type(value).__name__}")


class LiteServerChain(Chain):
    """Wraps a started LiteBalancer; `connect` builds one from a global config file."""

    def __init__(self, client: Any) -> None:
        self._client = client

    @classmethod
    async def connect(cls, config_path: Path, trust_level: int = 0) -> LiteServerChain:
        from pytoniq.liteclient.balancer import LiteBalancer

        client = LiteBalancer.from_config(load_global_config(config_path), trust_level=trust_level)
        await client.start_up()
        return cls(client)

    async def close(self) -> None:
        await self._client.close_all()

    async def account(self, address: Address) -> AccountInfo:
        account, shard_account = await self._client.raw_get_account_state(address)
        if account is None or shard_account is None:
            return AccountInfo(status="uninitialized", balance=0, last_lt=0)
        return AccountInfo(
            status=account.storage.state.type_,
            balance=account.storage.balance.grams,
            last_lt=shard_account.last_trans_lt,
        )

    async def run_get_method(
        self, address: Address, method: str, stack: Sequence[int | Cell] = ()
    ) -> list[StackValue]:
        args = [parse(v) if isinstance(v, Cell) else v for v in stack]
        try:
            result = await self._client.run_get_method(address, method, args)
        except Exception as exc:
            code = getattr(exc, "exit_code", None)
            if isinstance(code, int):
                raise GetMethodFailed(method, code) from exc
            raise ChainError(f"get-method {method}: {exc}") from exc
        return [_normalise(v) for v in result]

    async def send_boc(self, boc: bytes) -> None:
        try:
            await self._client.raw_send_message(boc)
        except Exception as exc:
            if "not accepted" in str(exc):
                raise MessageRejected.from_error(str(exc)) from exc
            raise ChainError(f"sending the message failed: {exc}") from exc

    async def transactions(
        self, address: Address, limit: int = 16, start: tuple[int, bytes] | None = None
    ) -> list[TxInfo]:
        if start is None:
            txs = await self._client.get_transactions(address, limit)
        else:
            txs = await self._client.get_transactions(address, limit, start[0], start[1])
        return [TxInfo.from_transaction(tx) for tx in txs]

    async def now(self) -> int:
        result = await self._client.get_time()
        return int(result["now"])
