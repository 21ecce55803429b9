"""Reads what the fee ledger folds: a channel's transactions after a watermark and the payer
wallet's transactions that sent its deposits (their fees are part of what funding cost)."""

from __future__ import annotations

from cocoon.ton import ledger
from cocoon.ton.chain import Chain, ChainError, TxInfo
from cocoon.ton.tvm import Address, user_friendly

# Pages of newest-first history tried in turn; the controller folds after every pass, so the
# first page nearly always reaches the watermark.
PAGES = (16, 100)  # toncenter v2 answers at most 100 per call


class HistoryTooLong(ChainError):
    pass


async def since(chain: Chain, address: Address, after_lt: int) -> list[TxInfo]:
    """Every transaction of `address` after `after_lt`, oldest first."""
    for limit in PAGES:
        txs = await chain.transactions(address, limit)
        if len(txs) < limit or min(t.lt for t in txs) <= after_lt:
            return sorted((t for t in txs if t.lt > after_lt), key=lambda t: t.lt)
    raise HistoryTooLong(
        f"{user_friendly(address)} has more than {PAGES[-1]} transactions after lt {after_lt}; "
        "read it with an archival endpoint page by page"
    )


async def wallet_fees(chain: Chain, wallet: Address, created: set[int]) -> dict[int, int]:
    """The sending fees of the wallet messages created at the lts in `created`."""
    if not created:
        return {}
    oldest = min(created) - 1  # a message's creation lt is its transaction's lt plus 1 or more
    for limit in PAGES:
        txs = await chain.transactions(wallet, limit)
        index = ledger.wallet_fee_index(txs)
        if created <= index.keys() or len(txs) < limit or min(t.lt for t in txs) < oldest:
            return {lt: index[lt] for lt in created if lt in index}
    return {}


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
