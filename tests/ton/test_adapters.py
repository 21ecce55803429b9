"""The adapters' conversions without a network: toncenter stack entries, rejection parsing,
and the liteserver adapter over a stand-in LiteBalancer."""

from __future__ import annotations

import base64
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from cocoon.ton.chain import ChainError, GetMethodFailed, MessageRejected
from cocoon.ton.liteserver import LiteServerChain, load_global_config
from cocoon.ton.toncenter import ToncenterChain, stack_in, stack_out
from cocoon.ton.tvm import Address, Builder, boc, end, parse


def test_toncenter_stack_round_trip() -> None:
    address = Address("0:" + "ab" * 32)
    cell = end(Builder().store_address(address))
    entry = ["cell", {"bytes": base64.b64encode(boc(cell)).decode(), "object": {}}]
    parsed = stack_out(entry)
    assert parsed is not None and not isinstance(parsed, int | list)
    assert parse(parsed).load_address() == address
    assert stack_out(["num", "0x10"]) == 16
    assert stack_out(["num", "-0x10"]) == -16
    assert stack_out(["null", None]) is None
    assert stack_out(["tuple", {"elements": [["num", "0x1"]]}]) == [1]
    assert stack_in(255) == ["num", "0xff"]
    with pytest.raises(ChainError):
        stack_out(["continuation", {}])


def test_rejection_carries_the_exit_code() -> None:
    assert MessageRejected.from_error("... not accepted exitcode=103, steps=5").exit_code == 103
    assert MessageRejected.from_error("not accepted").exit_code is None


class FakeBalancer:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def run_get_method(self, address: Address, method: str, stack: list[Any]) -> list[Any]:
        if method == "boom":
            error = RuntimeError("failed")
            error.exit_code = 11  # type: ignore[attr-defined]
            raise error
        return [7, parse(end(Builder().store_uint(1, 8))), None]

    async def raw_send_message(self, message: bytes) -> None:
        if message == b"bad":
            raise RuntimeError("External message was not accepted exitcode=104")
        self.sent.append(message)

    async def raw_get_account_state(self, address: Address) -> tuple[None, None]:
        return None, None

    async def get_time(self) -> dict[str, int]:
        return {"now": 1_900_000_000}


async def test_liteserver_adapter_normalises_values() -> None:
    fake = FakeBalancer()
    chain = LiteServerChain(fake)
    address = Address("0:" + "cd" * 32)
    stack = await chain.run_get_method(address, "get")
    assert stack[0] == 7 and stack[2] is None
    assert parse(stack[1]).load_uint(8) == 1  # type: ignore[arg-type]
    with pytest.raises(GetMethodFailed) as failed:
        await chain.run_get_method(address, "boom")
    assert failed.value.exit_code == 11
    with pytest.raises(MessageRejected) as rejected:
        await chain.send_boc(b"bad")
    assert rejected.value.exit_code == 104
    await chain.send_boc(b"ok")
    assert fake.sent == [b"ok"]
    assert (await chain.account(address)).status == "uninitialized"
    assert await chain.now() == 1_900_000_000


def test_global_config_comes_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "global.config.json"
    path.write_text(json.dumps({"liteservers": [{"ip": 1, "port": 2, "id": {}}]}))
    assert load_global_config(path)["liteservers"]
    path.write_text("{}")
    with pytest.raises(ChainError, match="no liteservers"):
        load_global_config(path)
    with pytest.raises(ChainError, match="cannot read"):
        load_global_config(tmp_path / "missing.json")


async def test_unreachable_endpoint_message_has_no_python_tuple() -> None:
    """A PaymentChannel's status message quotes this: words, not `('127.0.0.1', 9)`."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: the connect is refused
        chain = ToncenterChain(f"http://127.0.0.1:{port}")
        try:
            with pytest.raises(ChainError) as raised:
                await chain.account(Address("0:" + "00" * 32))
        finally:
            await chain.close()
    message = str(raised.value)
    assert f"cannot connect to 127.0.0.1:{port} (connection refused)" in message
    assert "(" + "'" not in message and "ssl:" not in message
