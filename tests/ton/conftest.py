"""The chain emulator for the TON tests: one Node process per session on a free loopback port."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator

import pytest

from cocoon import keys
from cocoon.ton import emulator
from cocoon.ton.toncenter import ToncenterChain
from cocoon.ton.units import TON
from cocoon.ton.wallet import Wallet


@pytest.fixture(scope="session")
def emulator_url() -> Iterator[str]:
    # a missing Node is a broken setup, not a reason to skip the real-TVM tests
    assert shutil.which("node"), "node is not installed: run `make setup`"
    with emulator.start() as running:
        yield running.url


@pytest.fixture
async def chain(emulator_url: str) -> AsyncIterator[ToncenterChain]:
    client = ToncenterChain(emulator_url)
    try:
        yield client
    finally:
        await client.close()


async def funded_wallet(chain: ToncenterChain, url: str, amount: int = 100 * TON) -> Wallet:
    wallet = Wallet(chain, keys.generate())
    if amount:
        await emulator.faucet(url, wallet.address, amount)
    return wallet
