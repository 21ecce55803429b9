"""The toncenter v2 HTTP API subset, served by toncenter itself or by the local emulator."""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from typing import Any

import aiohttp

from cocoon.ton.chain import (
    AccountInfo,
    Chain,
    ChainError,
    GetMethodFailed,
    MessageRejected,
    TxInfo,
)
from cocoon.ton.stack import StackValue
from cocoon.ton.tvm import Address, Cell, boc, from_boc, raw

MASTERCHAIN_SHARD = "-9223372036854775808"


def _b64(cell: Cell) -> str:
    return base64.b64encode(boc(cell)).decode()


def stack_in(value: int | Cell) -> list[str]:
    if isinstance(value, int):
        return ["num", hex(value)]
    return ["tvm.Slice", _b64(value)]


def stack_out(entry: list[Any]) -> StackValue:
    kind, value = entry[0], entry[1]
    if kind == "num":
        return int(value, 16) if value.lstrip("-").startswith("0x") else int(value)
    if kind in ("cell", "slice"):
        return from_boc(base64.b64decode(value["bytes"]))
    if kind == "null":
        return None
    if kind in ("tuple", "list"):
        return [stack_out(item) for item in value["elements"]]
    raise ChainError(f"unsupported get-method stack entry {kind!r}")



def describe(exc: BaseException) -> str:
    """Words for a status message: aiohttp's connect errors embed a Python tuple of the address."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        errno = exc.os_error.errno
        reason = os.strerror(errno) if errno else type(exc.os_error).__name__
        return f"cannot connect to {exc.host}:{exc.port} ({reason.lower()})"
    return str(exc) or type(exc).__name__


class ToncenterChain(Chain):
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"X-API-Key": api_key} if api_key else {}
        self._session = aiohttp.ClientSession(
            headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
        )

    async def close(self) -> None:
        await self._session.close()

    async def _call(self, path: str, params: dict[str, str] | None = None,
                    body: dict[str, Any] | None = None) -> Any:
        url = f"{self.base_url}{path}"
        try:
            if body is None:
                response = await self._session.get(url, params=params)
            else:
                response = await self._session.post(url, json=body)
            async with response:
                payload = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ChainError(f"{url}: {describe(exc)}; is the endpoint up?") from exc
        if not isinstance(payload, dict) or not payload.get("ok"):
            error = payload.get("error", payload) if isinstance(payload, dict) else payload
            if "not accepted" in str(error):
                raise MessageRejected.from_error(str(error))
            raise ChainError(f"{path}: {error}")
        return payload["result"]

    async def account(self, address: Address) -> AccountInfo:
        result = await self._call("/api/v2/getAddressInformation", {"address": raw(address)})
        return AccountInfo(
            status=result["state"],
            balance=int(result["balance"]),
            last_lt=int(result["last_transaction_id"]["lt"]),
        )

    async def run_get_method(
        self, address: Address, method: str, stack: Sequence[int | Cell] = ()
    ) -> list[StackValue]:
        body = {"address": raw(address), "method": method, "stack": [stack_in(v) for v in stack]}
        result = await self._call("/api/v2/runGetMethod", body=body)
        exit_code = int(result["exit_code"])
        if exit_code not in (0, 1):
            raise GetMethodFailed(method, exit_code)
        return [stack_out(entry) for entry in result["stack"]]

    async def send_boc(self, boc: bytes) -> None:
        await self._call("/api/v2/sendBoc", body={"boc": base64.b64encode(boc).decode()})

    async def transactions(
        self, address: Address, limit: int = 16, start: tuple[int, bytes] | None = None
    ) -> list[TxInfo]:
        params = {"address": raw(address), "limit": str(limit), "archival": "true"}
        if start is not None:
            params |= {"lt": str(start[0]), "hash": start[1].hex()}
        result = await self._call("/api/v2/getTransactions", params)
        return [TxInfo.from_boc(base64.b64decode(tx["data"])) for tx in result]

    async def now(self) -> int:
        info = await self._call("/api/v2/getMasterchainInfo")
        last = info["last"]
        params = {"workchain": "-1", "shard": MASTERCHAIN_SHARD, "seqno": str(last["seqno"])}
        header = await self._call("/api/v2/getBlockHeader", params)
        return int(header["gen_utime"])
