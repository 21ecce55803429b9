"""Reading a long transaction history page by page on the real emulator: every transaction after
the watermark once, in order, however many pages it takes (the ledger used to stop at 100)."""

from __future__ import annotations

import pytest

from cocoon import keys
from cocoon.ton import emulator, history
from cocoon.ton.toncenter import ToncenterChain
from cocoon.ton.wallet import Wallet

FUNDINGS = 23


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history, "FIRST_PAGE", 4)
    monkeypatch.setattr(history, "PAGE", 5)


async def _funded_many_times(chain: ToncenterChain, url: str) -> tuple[Wallet, list[int]]:
    wallet = Wallet(chain, keys.generate())
    for i in range(FUNDINGS):
        await emulator.faucet(url, wallet.address, 1_000 + i)
    newest = await chain.transactions(wallet.address, 100)
    return wallet, sorted(t.lt for t in newest)


@pytest.mark.usefixtures("small_pages")
async def test_the_whole_history_is_read_across_pages(
    chain: ToncenterChain, emulator_url: str
) -> None:
    wallet, lts = await _funded_many_times(chain, emulator_url)
    assert len(lts) == FUNDINGS
    everything = await history.since(chain, wallet.address, 0)
    assert [t.lt for t in everything] == lts
    assert [t.in_value for t in everything] == [1_000 + i for i in range(FUNDINGS)]
    after = await history.since(chain, wallet.address, lts[9])
    assert [t.lt for t in after] == lts[10:]
    assert await history.since(chain, wallet.address, lts[-1]) == []


@pytest.mark.usefixtures("small_pages")
async def test_an_unbounded_history_is_refused_not_read_forever(
    chain: ToncenterChain, emulator_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    wallet, _ = await _funded_many_times(chain, emulator_url)
    monkeypatch.setattr(history, "MAX_TRANSACTIONS", 10)
    with pytest.raises(history.HistoryTooLong, match="more than 10 transactions"):
        await history.since(chain, wallet.address, 0)
