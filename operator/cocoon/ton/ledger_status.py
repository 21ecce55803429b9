"""The fee ledger between its pure form (`ledger.Ledger`) and the PaymentChannel status."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cocoon.api.paymentchannel import FeeLedger, LedgerEntry
from cocoon.ton import ledger


def from_status(recorded: FeeLedger | None) -> ledger.Ledger:
    if recorded is None:
        return ledger.Ledger()
    return ledger.Ledger(
        deposits=int(recorded.deposits),
        claimed=int(recorded.claimed),
        paid_out=int(recorded.paid_out),
        refunded=int(recorded.refunded),
        channel_fees=int(recorded.channel_fees),
        funding_fees=int(recorded.funding_fees),
        claim_charges=int(recorded.claim_charges),
        last_lt=int(recorded.last_lt),
        last_hash=recorded.last_hash,
        entries=tuple(
            ledger.Entry(
                kind=ledger.Kind(e.kind) if e.kind in set(ledger.Kind) else ledger.Kind.OTHER,
                hash=e.hash,
                lt=int(e.lt),
                utime=int(e.at.timestamp()),
                value=int(e.value),
                fee=int(e.fee),
                wallet_fee=int(e.wallet_fee),
                charge=int(e.charge),
            )
            for e in recorded.entries
        ),
    )


def to_status(book: ledger.Ledger) -> dict[str, Any]:
    return FeeLedger(
        deposits=str(book.deposits),
        claimed=str(book.claimed),
        paid_out=str(book.paid_out),
        refunded=str(book.refunded),
        channel_fees=str(book.channel_fees),
        funding_fees=str(book.funding_fees),
        claim_charges=str(book.claim_charges),
        fees_paid=str(book.fees_paid),
        last_lt=str(book.last_lt),
        last_hash=book.last_hash,
        entries=[
            LedgerEntry(
                kind=e.kind.value,
                hash=e.hash,
                lt=str(e.lt),
                at=datetime.fromtimestamp(e.utime, UTC),
                value=str(e.value),
                fee=str(e.fee),
                wallet_fee=str(e.wallet_fee),
                charge=str(e.charge),
            )
            for e in book.entries
        ],
    ).to_api()
