"""The fee ledger's arithmetic, table-driven over transactions shaped as the chain records them
(the figures are those the emulator charged in a real lifecycle)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cocoon import keys
from cocoon.ton import ledger
from cocoon.ton.chain import TxInfo
from cocoon.ton.channel import claim_body, close_body, coop_close_body, top_up_body, withdraw_body
from cocoon.ton.tvm import Address
from cocoon.ton.units import TON
from cocoon.ton.wallet import wallet_address

PAYER = wallet_address(keys.public_bytes(keys.generate()))
PAYEE = wallet_address(keys.public_bytes(keys.generate()))
STRANGER = wallet_address(keys.public_bytes(keys.generate()))
SIG = b"\x01" * 64


def tx(
    lt: int, *, value: int = 0, source: Address | None = None, body: object = None,
    fees: int = 0, fwd: int = 0, outs: tuple[tuple[Address | None, int], ...] = (),
    success: bool = True,
) -> TxInfo:
    return TxInfo(
        lt=lt, hash=lt.to_bytes(32, "big"), utime=1_700_000_000 + lt, in_body_hash=None,
        in_source=source, in_value=value, exit_code=0, success=success, total_fees=fees,
        out_values=outs, out_fwd_fees=fwd, out_created_lts=tuple(lt + 1 + i for i, _ in
                                                                 enumerate(outs)),
        in_created_lt=lt - 1 if source is not None else 0, in_body=body,  # type: ignore[arg-type]
    )


DEPLOY = tx(100, value=2 * TON, source=PAYER, body=top_up_body(), fees=1_083_600)
TOP_UP = tx(200, value=TON, source=PAYER, body=top_up_body(), fees=1_083_600)
CLAIM = tx(300, body=claim_body(TON // 4, SIG), fees=2_288_531, fwd=266_669,
           outs=((PAYEE, TON // 4 - 2_800_000),))
CLAIM2 = tx(400, body=claim_body(TON // 3, SIG), fees=2_288_531, fwd=266_669,
            outs=((PAYEE, TON // 3 - TON // 4 - 2_800_000),))
CLOSE = tx(500, body=close_body(SIG), fees=1_479_200)
WALLET_FEES = {99: 16_297_600, 199: 2_368_000}


def balance_after(txs: list[TxInfo]) -> int:
    """What the chain leaves on the account: value in, less fees, less value and fwd out."""
    return sum(t.in_value - t.total_fees - t.out_fwd_fees - sum(v for _, v in t.out_values)
               for t in txs)


def withdraw_of(txs: list[TxInfo], lt: int = 600) -> TxInfo:
    left = balance_after(txs) - 2_018_953 - 266_669
    return tx(lt, body=withdraw_body(), fees=2_018_953, fwd=266_669, outs=((PAYER, left),))


LIFECYCLE = [DEPLOY, TOP_UP, CLAIM, CLAIM2, CLOSE]
LIFECYCLE.append(withdraw_of(LIFECYCLE))


@pytest.mark.parametrize(
    ("txs", "kinds", "deposits", "claimed", "charges", "funding"),
    [
        ([DEPLOY], ["deploy"], 2 * TON, 0, 0, 16_297_600),
        ([DEPLOY, TOP_UP], ["deploy", "topup"], 3 * TON, 0, 0, 16_297_600 + 2_368_000),
        ([DEPLOY, CLAIM], ["deploy", "claim"], 2 * TON, TON // 4, 2_800_000, 16_297_600),
        (LIFECYCLE, ["deploy", "topup", "claim", "claim", "close", "withdraw"], 3 * TON,
         TON // 3, 5_600_000, 16_297_600 + 2_368_000),
    ],
)
def test_fold_counts_each_movement_and_balances_exactly(
    txs: list[TxInfo], kinds: list[str], deposits: int, claimed: int, charges: int, funding: int
) -> None:
    book = ledger.fold(ledger.Ledger(), txs, PAYER, PAYEE, WALLET_FEES)
    assert [e.kind.value for e in book.entries] == kinds
    assert (book.deposits, book.claimed, book.claim_charges, book.funding_fees) == (
        deposits, claimed, charges, funding
    )
    assert book.channel_fees == sum(t.total_fees + t.out_fwd_fees for t in txs)
    assert book.paid_out == claimed - charges
    assert book.balance == balance_after(txs), "the identity holds after every transaction"
    assert book.fees_paid == book.channel_fees + book.funding_fees
    assert (book.last_lt, book.last_hash) == (txs[-1].lt, txs[-1].hash.hex())


def test_after_the_close_the_refund_is_deposits_less_claimed_less_the_payers_fees() -> None:
    book = ledger.fold(ledger.Ledger(), LIFECYCLE, PAYER, PAYEE, WALLET_FEES)
    assert book.balance == 0
    assert book.refunded == book.deposits - book.claimed - (book.channel_fees - book.claim_charges)
    assert book.paid_out == book.claimed - book.payee_fees
    assert book.payer_fees == book.funding_fees + book.channel_fees - book.claim_charges


@pytest.mark.parametrize("split", range(len(LIFECYCLE) + 1))
def test_folding_in_steps_and_refolding_count_each_transaction_once(split: int) -> None:
    whole = ledger.fold(ledger.Ledger(), LIFECYCLE, PAYER, PAYEE, WALLET_FEES)
    first = ledger.fold(ledger.Ledger(), LIFECYCLE[:split], PAYER, PAYEE, WALLET_FEES)
    # a crash after persisting `first` re-reads everything the chain returns, old ones included
    again = ledger.fold(first, LIFECYCLE, PAYER, PAYEE, WALLET_FEES)
    assert again == whole
    assert ledger.fold(whole, LIFECYCLE, PAYER, PAYEE, WALLET_FEES) == whole


def test_a_transaction_already_entered_is_not_counted_again_even_below_a_lost_watermark() -> None:
    book = ledger.fold(ledger.Ledger(), [DEPLOY, CLAIM], PAYER, PAYEE, WALLET_FEES)
    rewound = replace(book, last_lt=DEPLOY.lt)  # only the hash still says CLAIM was counted
    assert ledger.fold(rewound, [CLAIM], PAYER, PAYEE, WALLET_FEES) == rewound


def test_a_deposit_whose_sending_fee_is_unknown_is_not_counted() -> None:
    with pytest.raises(ledger.MissingWalletTransaction) as missing:
        ledger.fold(ledger.Ledger(), [DEPLOY], PAYER, PAYEE, {})
    assert missing.value.created_lt == DEPLOY.in_created_lt


@pytest.mark.parametrize(
    ("extra", "kind", "deposits", "claimed", "charge", "refunded"),
    [
        # anyone may top up; only the payer wallet's sends carry a funding fee
        (tx(200, value=TON, source=STRANGER, body=None, fees=1_000), "topup", 3 * TON, 0, 0, 0),
        # a refused claim costs its fee and moves nothing
        (tx(200, body=claim_body(TON, SIG), fees=5_000, success=False), "claim", 2 * TON, 0, 0, 0),
        # an internal claim: the payee's attached value rides back with the payout
        (tx(200, value=TON // 20, source=PAYEE, body=claim_body(TON // 4, SIG), fees=3_000,
            fwd=1_000, outs=((PAYEE, TON // 4 + TON // 20 - 4_000),)),
         "claim", 2 * TON, TON // 4, 4_000, 0),
        # a cooperative close pays both sides in one transaction
        (tx(200, value=TON // 20, source=PAYEE, body=coop_close_body(TON // 4, SIG),
            fees=3_000, fwd=2_000, outs=((PAYEE, TON // 4 + TON // 20 - 3_000),
                                         (PAYER, 2 * TON - TON // 4 - 10_000))),
         "coopclose", 2 * TON, TON // 4, 3_000, 2 * TON - TON // 4 - 10_000),
    ],
)
def test_other_transactions(
    extra: TxInfo, kind: str, deposits: int, claimed: int, charge: int, refunded: int
) -> None:
    book = ledger.fold(ledger.Ledger(), [DEPLOY, extra], PAYER, PAYEE, WALLET_FEES)
    assert book.entries[-1].kind.value == kind
    assert (book.deposits, book.claimed, book.claim_charges, book.refunded) == (
        deposits, claimed, charge, refunded
    )
    assert book.balance == balance_after([DEPLOY, extra])


def test_entries_are_bounded_and_the_sums_cover_everything() -> None:
    top_ups = [tx(100 * i, value=TON, source=PAYER, body=None) for i in range(1, 40)]
    fees = {t.in_created_lt: 7 for t in top_ups}
    book = ledger.fold(ledger.Ledger(), top_ups, PAYER, PAYEE, fees)
    assert len(book.entries) == ledger.MAX_ENTRIES
    assert book.deposits == 39 * TON and book.funding_fees == 39 * 7


def test_the_wallet_fee_index_pairs_each_message_with_its_sender() -> None:
    sent = tx(99, fees=12_412_770, fwd=3_884_830, outs=((STRANGER, 2 * TON),))
    assert ledger.wallet_fee_index([sent]) == {100: 12_412_770 + 3_884_830}
    assert ledger.funding_messages([DEPLOY, CLAIM], PAYER, 0) == {DEPLOY.in_created_lt}


# -- reconciliation -----------------------------------------------------------------------------

BOOK = ledger.fold(ledger.Ledger(), [DEPLOY, CLAIM], PAYER, PAYEE, WALLET_FEES)
CHAIN = ledger.OnChainState("Open", 2 * TON - 10_000, TON // 4, BOOK.balance)
FIGURES = ledger.Figures(
    owed=TON // 3, promised=TON // 4, claimed=TON // 4, deposited=2 * TON - 10_000,
    state="Open", ledger=BOOK,
)


@pytest.mark.parametrize(
    ("figures", "chain", "from_chain", "named"),
    [
        (FIGURES, CHAIN, BOOK, []),
        (None, CHAIN, BOOK, []),
        (FIGURES, replace(CHAIN, balance=CHAIN.balance - 1), BOOK, ["balance"]),
        (FIGURES, replace(CHAIN, claimed=TON // 3), BOOK, ["ledger.claimed", "claimed"]),
        (replace(FIGURES, state="Closing"), CHAIN, BOOK, ["state"]),
        (replace(FIGURES, deposited=2 * TON), CHAIN, BOOK, ["deposited"]),
        (replace(FIGURES, ledger=replace(BOOK, channel_fees=BOOK.channel_fees + 1)), CHAIN, BOOK,
         ["ledger.channel_fees"]),
        (replace(FIGURES, ledger=replace(BOOK, refunded=1)), CHAIN, BOOK, ["ledger.refunded"]),
        (replace(FIGURES, ledger=replace(BOOK, funding_fees=0)), CHAIN, BOOK,
         ["ledger.funding_fees"]),
        (replace(FIGURES, promised=TON // 5), CHAIN, BOOK, ["claimed"]),
        (replace(FIGURES, owed=TON // 5), CHAIN, BOOK, ["promised"]),
    ],
)
def test_reconcile_names_the_figure_that_disagrees(
    figures: ledger.Figures | None, chain: ledger.OnChainState, from_chain: ledger.Ledger,
    named: list[str],
) -> None:
    found = ledger.reconcile(figures, chain, from_chain)
    assert [m.figure for m in found] == named
    assert all(m.figure in str(m) and m.why for m in found)


def test_a_status_one_pass_behind_is_lagging_not_wrong() -> None:
    older = ledger.fold(ledger.Ledger(), [DEPLOY], PAYER, PAYEE, WALLET_FEES)
    figures = replace(FIGURES, ledger=older)
    found = ledger.reconcile(figures, CHAIN, BOOK, at_watermark=older)
    assert [m.figure for m in found] == ["ledger.last_lt"]
    assert "next pass" in found[0].why
