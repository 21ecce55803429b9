"""Reads what the fee ledger folds: a channel's transactions after a watermark and the payer
wallet's transactions that sent its deposits (their fees are part of what funding cost)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from cocoon.ton import ledger
from cocoon.ton.chain import Chain, ChainError, TxInfo
from cocoon.ton.tvm import Address, user_friendly

# The first page is small (the controller folds after every pass, so it nearly always reaches the
# watermark); later pages are as large as toncenter v2 answers. A catch-up reads at most
# MAX_TRANSACTIONS: a channel settles once a pass, so that is weeks of history.
FIRST_PAGE = 16
PAGE = 100
MAX_TRANSACTIONS = 20_000


class HistoryTooLong(ChainError):
    pass


async def _back_from_newest(chain: Chain, address: Address) -> AsyncIterator[list[TxInfo]]:
    """Pages of `address`'s history, newest first, each starting where the last one ended."""
    start: tuple[int, bytes] | None = None
    limit, read = FIRST_PAGE, 0
    while True:
        page = await chain.transactions(address, limit, start)
        if not page:
            return
        yield page
        read += len(page)
        oldest = min(page, key=lambda t: t.lt)
        if oldest.prev_lt == 0:
            return
        if read >= MAX_TRANSACTIONS:
            raise HistoryTooLong(
                f"{user_friendly(address)} has more than {MAX_TRANSACTIONS} transactions to "
                "read; read it with `cocoon ton ledger` against an archival endpoint"
            )
        start, limit = (oldest.prev_lt, oldest.prev_hash), PAGE


async def since(chain: Chain, address: Address, after_lt: int) -> list[TxInfo]:
    """Every transaction of `address` after `after_lt`, oldest first, each once."""
    found: dict[int, TxInfo] = {}
    async for page in _back_from_newest(chain, address):
        found.update((t.lt, t) for t in page if t.lt > after_lt)
        if min(t.lt for t in page) <= after_lt:
            break
    return [found[lt] for lt in sorted(found)]


async def wallet_fees(chain: Chain, wallet: Address, created: set[int]) -> dict[int, int]:
    """The sending fees of the wallet messages created at the lts in `created`."""
    if not created:
        return {}
    oldest = min(created) - 1  # a message's creation lt is its transaction's lt plus 1 or more
    index: dict[int, int] = {}
    async for page in _back_from_newest(chain, wallet):
        index |= ledger.wallet_fee_index(page)
        if created <= index.keys() or min(t.lt for t in page) < oldest:
            break
    return {lt: index[lt] for lt in created if lt in index}


async def catch_up(
    chain: Chain, address: Address, payer: Address, payee: Address, current: ledger.Ledger
) -> ledger.Ledger:
    """`current` with every newer transaction of the channel folded in.

    Raises `ledger.MissingWalletTransaction` when a deposit's sending transaction cannot be
    found; the ledger then stays at its watermark, never counts a deposit without its fee.
    """
    txs = await since(chain, address, current.last_lt)
    if not txs:
        return current
    fees = await wallet_fees(chain, payer, ledger.funding_messages(txs, payer, current.last_lt))
    return ledger.fold(current, txs, payer, payee, fees)
