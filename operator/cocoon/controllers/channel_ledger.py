"""The PaymentChannel's fee ledger in its status: read the chain after the recorded watermark,
fold, and hand back the whole ledger to persist in the pass's one status patch (sums and
watermark together, so a crash before the patch re-reads and one after never counts twice)."""

from __future__ import annotations

import logging

from cocoon.api.paymentchannel import FeeLedger
from cocoon.kube import Obj
from cocoon.ton import history, ledger
from cocoon.ton.chain import Chain, ChainError
from cocoon.ton.channel import ChannelConfig
from cocoon.ton.ledger_status import from_status, to_status

logger = logging.getLogger(__name__)


async def record(chain: Chain, config: ChannelConfig, recorded: FeeLedger | None) -> Obj | None:
    """The ledger to persist, or None when nothing new happened on chain, or when it cannot be
    read completely now (a deposit's sending transaction not visible yet, the history not
    answering): it then stays at its watermark and the next pass folds what it missed. The
    ledger is bookkeeping; it never holds up the channel's own steps."""
    current = from_status(recorded)
    try:
        book = await history.catch_up(chain, config.address(), config.payer, config.payee, current)
    except (ledger.MissingWalletTransaction, ChainError) as exc:
        logger.warning("fee ledger waits: %s", exc)
        return None
    return None if book == current else to_status(book)
