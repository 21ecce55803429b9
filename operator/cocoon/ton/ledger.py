"""The fee ledger: where a channel's money went, folded from its transactions as the chain
recorded them (never estimated), and the checks that reconcile it against the chain.

Every channel transaction moves money in exactly one way (value in, fees, value out), so the
channel's balance obeys

    balance = deposits - claimed + claim_charges - refunded - channel_fees

where `claimed` is what promises moved to the payee, `claim_charges` the part of it the contract
withheld to pay the claim's gas (borne by the payee), and `channel_fees` every fee the chain took
from the channel (compute, storage, action and the forward fees of its payouts). The payer's
wallet also pays fees to send the deposits (`funding_fees`). Hence, once the channel is closed
and its balance is 0:

    payee paid   = claimed - payee_fees                         (payee_fees = claim_charges)
    refunded     = deposits - claimed - (channel_fees - claim_charges)

Folding is idempotent: a transaction at or below the watermark `last_lt`, or whose hash is
already an entry, is never counted twice, so a crash between reading and persisting re-reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from cocoon.ton.chain import TxInfo
from cocoon.ton.channel import Op
from cocoon.ton.tvm import Address, Cell, parse

MAX_ENTRIES = 16  # the most recent transactions kept for people; the sums cover all of them


class Kind(StrEnum):
    DEPLOY = "deploy"
    TOP_UP = "topup"
    CLAIM = "claim"
    CLOSE = "close"
    WITHDRAW = "withdraw"
    COOP_CLOSE = "coopclose"
    OTHER = "other"


_KINDS: dict[int, Kind] = {
    Op.TOP_UP: Kind.TOP_UP,
    Op.CLAIM: Kind.CLAIM,
    Op.CLOSE: Kind.CLOSE,
    Op.WITHDRAW: Kind.WITHDRAW,
    Op.COOP_CLOSE: Kind.COOP_CLOSE,
}
_CLAIMS = (Kind.CLAIM, Kind.COOP_CLOSE)


class MissingWalletTransaction(LookupError):
    """A deposit's sending transaction was not found in the payer wallet's history read."""

    def __init__(self, created_lt: int) -> None:
        super().__init__(f"the payer wallet transaction that sent the message of lt {created_lt}")
        self.created_lt = created_lt


@dataclass(frozen=True)
class Entry:
    """One channel transaction: what it moved and what the chain charged for it."""

    kind: Kind
    hash: str
    lt: int
    utime: int
    value: int  # deposited (funding), claimed delta (claims), refunded (withdraw)
    fee: int  # the channel transaction's fees plus its payouts' forward fees
    wallet_fee: int = 0  # the payer wallet's fees to send a deposit
    charge: int = 0  # withheld from a claim's payout by the contract (the payee's fee)


@dataclass(frozen=True)
class Ledger:
    deposits: int = 0
    claimed: int = 0
    paid_out: int = 0
    refunded: int = 0
    channel_fees: int = 0
    funding_fees: int = 0
    claim_charges: int = 0
    last_lt: int = 0
    last_hash: str = ""
    entries: tuple[Entry, ...] = ()

    @property
    def fees_paid(self) -> int:
        """Every fee the chain charged for this channel, whoever bore it."""
        return self.channel_fees + self.funding_fees

    @property
    def payee_fees(self) -> int:
        return self.claim_charges

    @property
    def payer_fees(self) -> int:
        return self.funding_fees + self.channel_fees - self.claim_charges

    @property
    def balance(self) -> int:
        """What the channel must hold on chain if every movement was read."""
        return (
            self.deposits - self.claimed + self.claim_charges - self.refunded - self.channel_fees
        )


def _op_and_amount(body: Cell | None) -> tuple[int | None, int | None]:
    """The channel op of a message body and, for claims, the cumulative it carries."""
    if body is None:
        return None, None
    s = parse(body)
    if s.remaining_bits < 32:
        return None, None
    op = int(s.load_uint(32))
    if op not in (Op.CLAIM, Op.COOP_CLOSE) or s.remaining_bits < 64 + 4:
        return op, None
    s.skip_bits(64)
    return op, int(s.load_coins())


def entry_of(
    ledger: Ledger, tx: TxInfo, payer: Address, payee: Address, wallet_fees: Mapping[int, int]
) -> Entry:
    """What one channel transaction adds, given everything folded before it."""
    op, cumulative = _op_and_amount(tx.in_body)
    kind = _KINDS.get(op, Kind.OTHER) if op is not None else Kind.TOP_UP
    if kind in (Kind.TOP_UP, Kind.OTHER) and tx.in_value and ledger.last_lt == 0:
        kind = Kind.DEPLOY
    fee = tx.total_fees + tx.out_fwd_fees
    to_payee = sum(v for dest, v in tx.out_values if dest is not None and dest == payee)
    claimed = 0
    if kind in _CLAIMS and tx.success and cumulative is not None:
        claimed = max(0, cumulative - ledger.claimed)
    wallet_fee = 0
    if kind not in _CLAIMS and tx.in_value and tx.in_source is not None and tx.in_source == payer:
        if tx.in_created_lt not in wallet_fees:
            raise MissingWalletTransaction(tx.in_created_lt)
        wallet_fee = wallet_fees[tx.in_created_lt]
    if kind in _CLAIMS:
        # the payee's attached value (internal claims) rides back with the payout
        return Entry(
            kind, tx.hash.hex(), tx.lt, tx.utime, claimed, fee,
            charge=claimed + tx.in_value - to_payee,
        )
    refunded = sum(v for dest, v in tx.out_values if dest is None or dest != payee)
    value = tx.in_value if tx.in_value else refunded
    return Entry(kind, tx.hash.hex(), tx.lt, tx.utime, value, fee, wallet_fee)


def apply(ledger: Ledger, tx: TxInfo, entry: Entry, payee: Address) -> Ledger:
    to_payee = sum(v for dest, v in tx.out_values if dest is not None and dest == payee)
    out_total = sum(v for _, v in tx.out_values)
    is_claim = entry.kind in _CLAIMS
    return replace(
        ledger,
        deposits=ledger.deposits + (0 if is_claim else tx.in_value),
        claimed=ledger.claimed + (entry.value if is_claim else 0),
        paid_out=ledger.paid_out + to_payee,
        refunded=ledger.refunded + out_total - to_payee,
        channel_fees=ledger.channel_fees + entry.fee,
        funding_fees=ledger.funding_fees + entry.wallet_fee,
        claim_charges=ledger.claim_charges + entry.charge,
        last_lt=tx.lt,
        last_hash=entry.hash,
        entries=(*ledger.entries, entry)[-MAX_ENTRIES:],
    )


def fold(
    ledger: Ledger,
    txs: Iterable[TxInfo],
    payer: Address,
    payee: Address,
    wallet_fees: Mapping[int, int],
) -> Ledger:
    """`ledger` with every transaction after its watermark added, oldest first."""
    seen = {e.hash for e in ledger.entries}
    for tx in sorted(txs, key=lambda t: t.lt):
        if tx.lt <= ledger.last_lt or tx.hash.hex() in seen:
            continue
        ledger = apply(ledger, tx, entry_of(ledger, tx, payer, payee, wallet_fees), payee)
        seen.add(ledger.last_hash)
    return ledger


def funding_messages(txs: Iterable[TxInfo], payer: Address, after_lt: int) -> set[int]:
    """Creation lts of the payer wallet's messages that funded the channel after `after_lt`."""
    return {
        tx.in_created_lt
        for tx in txs
        if tx.lt > after_lt and tx.in_value and tx.in_source is not None and tx.in_source == payer
        and _op_and_amount(tx.in_body)[0] not in (Op.CLAIM, Op.COOP_CLOSE)
    }


def wallet_fee_index(wallet_txs: Iterable[TxInfo]) -> dict[int, int]:
    """Each outgoing message's creation lt -> the fees of the wallet transaction that sent it."""
    return {
        created: tx.total_fees + tx.out_fwd_fees
        for tx in wallet_txs
        for created in tx.out_created_lts
    }


# -- reconciliation -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """What the channel's status says."""

    owed: int
    promised: int
    claimed: int
    deposited: int
    state: str
    ledger: Ledger


@dataclass(frozen=True)
class OnChainState:
    state: str
    deposited: int
    claimed: int
    balance: int


@dataclass(frozen=True)
class Mismatch:
    figure: str
    status: int | str
    chain: int | str
    why: str

    def __str__(self) -> str:
        return f"{self.figure}: status says {self.status}, the chain says {self.chain} ({self.why})"


LEDGER_FIGURES = (
    "deposits", "claimed", "paid_out", "refunded", "channel_fees", "funding_fees",
    "claim_charges",
)


def reconcile(
    status: Figures | None,
    chain: OnChainState,
    from_chain: Ledger,
    at_watermark: Ledger | None = None,
    managed: bool = True,
) -> list[Mismatch]:
    """Every figure that disagrees.

    `from_chain` is the ledger folded from the chain's whole history, `at_watermark` the same
    fold stopped at the status ledger's watermark, so a status that lags one pass behind is
    reported as lagging, not as wrong in every figure. Without a status (a channel known only
    by its address) only the chain's own identities are checked.
    """
    found: list[Mismatch] = []
    if from_chain.balance != chain.balance:
        found.append(Mismatch(
            "balance", from_chain.balance, chain.balance,
            "deposits - claimed + claim charges - refunded - channel fees must equal the "
            "balance: a transaction's value or fee was not read",
        ))
    if from_chain.claimed != chain.claimed:
        found.append(Mismatch(
            "ledger.claimed", from_chain.claimed, chain.claimed,
            "the claims read from the history do not add up to the contract's claimed",
        ))
    if status is None:
        return found
    for name, mine, theirs in (
        ("state", status.state, chain.state),
        ("deposited", status.deposited, chain.deposited),
        ("claimed", status.claimed, chain.claimed),
    ):
        if mine != theirs:
            found.append(Mismatch(name, mine, theirs, "the status is not what the contract says"))
    recorded = at_watermark if at_watermark is not None else from_chain
    for name in LEDGER_FIGURES:
        mine, theirs = getattr(status.ledger, name), getattr(recorded, name)
        if mine != theirs:
            found.append(Mismatch(
                f"ledger.{name}", mine, theirs,
                "the recorded ledger disagrees with the same transactions on chain",
            ))
    if status.ledger.last_lt != from_chain.last_lt:
        found.append(Mismatch(
            "ledger.last_lt", status.ledger.last_lt, from_chain.last_lt,
            "the operator has not recorded the newest transactions yet; re-run after its "
            "next pass",
        ))
    if status.claimed > status.promised:
        found.append(Mismatch(
            "claimed", status.claimed, status.promised, "more was claimed than promised"
        ))
    if managed and status.promised > status.owed:
        found.append(Mismatch(
            "promised", status.promised, status.owed, "more was promised than is owed"
        ))
    return found
