"""`cocoon ton ledger`: a channel's fee ledger, read from its PaymentChannel status, refolded
from the chain's own transactions and reconciled figure by figure.

Exit codes: 0 everything agrees, 3 a figure disagrees (each is named), 1 the chain or the API
server failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from cocoon.api.paymentchannel import PaymentChannelSpec, PaymentChannelStatus, SigningMode
from cocoon.kube import PAYMENT_CHANNELS, Kube, Obj, api_message
from cocoon.ton import history, ledger
from cocoon.ton.chain import Chain, ChainError
from cocoon.ton.channel import ChannelState, State
from cocoon.ton.ledger_status import from_status
from cocoon.ton.tvm import Address, user_friendly

MISMATCH = 3
HELP = "a channel's fee ledger reconciled against the chain (exit 3 names what disagrees)"
_STATES = {State.OPEN: "Open", State.CLOSING: "Closing", State.CLOSED: "Closed"}


class LedgerInputError(ValueError):
    """The channel cannot be found or named as given."""


async def _status_of(ref: str, kubeconfig: str | None) -> tuple[Obj, PaymentChannelStatus]:
    namespace, sep, name = ref.partition("/")
    if not sep or not namespace or not name:
        raise LedgerInputError(f"{ref!r}: name the channel as NAMESPACE/NAME")
    kube = await Kube.connect(kubeconfig)
    try:
        body = await kube.get_or_none(PAYMENT_CHANNELS, name, namespace)
    except ApiException as exc:
        raise ChainError(f"the API server refused to read {ref}: {api_message(exc)}") from exc
    finally:
        await kube.close()
    if body is None:
        raise LedgerInputError(f"no PaymentChannel {ref}; list them with `kubectl get pch -A`")
    status = PaymentChannelStatus.model_validate(body.get("status") or {})
    if not status.address:
        raise LedgerInputError(f"{ref} has no channel address yet; it was never deployed")
    return body, status


def _figures(book: ledger.Ledger) -> dict[str, int]:
    return {
        "deposits": book.deposits,
        "claimed": book.claimed,
        "paidOut": book.paid_out,
        "refunded": book.refunded,
        "channelFees": book.channel_fees,
        "fundingFees": book.funding_fees,
        "claimCharges": book.claim_charges,
        "feesPaid": book.fees_paid,
        "payerFees": book.payer_fees,
        "payeeFees": book.payee_fees,
        "balance": book.balance,
        "lastLt": book.last_lt,
    }


async def report(
    chain: Chain, address: Address, status: PaymentChannelStatus | None, managed: bool
) -> dict[str, Any]:
    """The reconciliation as data: figures from the status and from the chain, and mismatches."""
    on_chain = ChannelState.from_stack(await chain.run_get_method(address, "get_channel_state"))
    account = await chain.account(address)
    txs = await history.since(chain, address, 0)
    fees = await history.wallet_fees(
        chain, on_chain.payer, ledger.funding_messages(txs, on_chain.payer, 0)
    )
    folded = ledger.fold(ledger.Ledger(), txs, on_chain.payer, on_chain.payee, fees)
    chain_state = ledger.OnChainState(
        _STATES[on_chain.state], on_chain.deposited, on_chain.claimed, account.balance
    )
    figures = None
    recorded = at_watermark = None
    if status is not None:
        recorded = from_status(status.ledger)
        at_watermark = ledger.fold(
            ledger.Ledger(), [t for t in txs if t.lt <= recorded.last_lt],
            on_chain.payer, on_chain.payee, fees,
        )
        promised = int(status.latest_promise.cumulative) if status.latest_promise else 0
        figures = ledger.Figures(
            owed=int(status.owed), promised=promised, claimed=int(status.claimed),
            deposited=int(status.deposited), state=status.state.value, ledger=recorded,
        )
    mismatches = ledger.reconcile(figures, chain_state, folded, at_watermark, managed)
    out: dict[str, Any] = {
        "address": user_friendly(address),
        "payer": user_friendly(on_chain.payer),
        "payee": user_friendly(on_chain.payee),
        "chain": {
            "state": chain_state.state,
            "deposited": str(on_chain.deposited),
            "claimed": str(on_chain.claimed),
            "balance": str(account.balance),
            "ledger": {k: str(v) for k, v in _figures(folded).items()},
        },
        "entries": [
            {"kind": e.kind.value, "hash": e.hash, "lt": str(e.lt), "value": str(e.value),
             "fee": str(e.fee), "walletFee": str(e.wallet_fee), "charge": str(e.charge)}
            for e in folded.entries
        ],
        "mismatches": [
            {"figure": m.figure, "status": str(m.status), "chain": str(m.chain), "why": m.why}
            for m in mismatches
        ],
        "ok": not mismatches,
    }
    if figures is not None and recorded is not None:
        out["status"] = {
            "state": figures.state,
            "owed": str(figures.owed),
            "promised": str(figures.promised),
            "claimed": str(figures.claimed),
            "unclaimed": str(figures.owed - figures.claimed),
            "deposited": str(figures.deposited),
            "ledger": {k: str(v) for k, v in _figures(recorded).items()},
        }
    return out


def table(data: dict[str, Any]) -> str:
    """The report for people: one row per figure, the status beside the chain."""
    chain, status = data["chain"], data.get("status")
    mine = (status or {}).get("ledger", {})
    rows: list[tuple[str, str, str]] = [("", "status", "chain")]
    if status is not None:
        rows += [
            ("served (owed)", status["owed"], ""),
            ("promised", status["promised"], ""),
            ("unclaimed (owed - claimed)", status["unclaimed"], ""),
            ("state", status["state"], chain["state"]),
            ("deposited (contract)", status["deposited"], chain["deposited"]),
        ]
    rows.append(("claimed", (status or {}).get("claimed", ""), chain["claimed"]))
    labels = (
        ("deposits (value received)", "deposits"),
        ("paid to the payee", "paidOut"),
        ("refunded to the payer", "refunded"),
        ("fees paid on chain", "feesPaid"),
        ("  channel transactions", "channelFees"),
        ("  payer wallet, funding", "fundingFees"),
        ("  of which the payee's (claim charges)", "payeeFees"),
        ("  of which the payer's", "payerFees"),
        ("balance left (ledger)", "balance"),
    )
    rows += [(label, mine.get(key, ""), chain["ledger"][key]) for label, key in labels]
    rows.append(("balance left (account)", "", chain["balance"]))
    width = max(len(r[0]) for r in rows)
    cols = [max(len(r[i]) for r in rows) for i in (1, 2)]
    lines = [f"channel {data['address']}  payer {data['payer']}  payee {data['payee']}"]
    lines += [
        f"  {a.ljust(width)}  {b.rjust(cols[0])}  {c.rjust(cols[1])}" for a, b, c in rows
    ]
    lines.append(
        "  identity: deposits = claimed - claim charges + refunded + channel fees + balance"
    )
    lines += [
        f"MISMATCH {m['figure']}: status {m['status']}, chain {m['chain']} ({m['why']})"
        for m in data["mismatches"]
    ]
    lines.append("ok: every figure agrees" if data["ok"] else "NOT OK: see the mismatches above")
    return "\n".join(lines)


def arguments(p: argparse.ArgumentParser, address: Callable[[str], Address]) -> None:
    p.add_argument("channel_ref", nargs="?", metavar="NAMESPACE/NAME", help="a PaymentChannel")
    p.add_argument("--address", type=address, help="a channel address: chain figures only")
    p.add_argument("--kubeconfig", help="kubeconfig (default $KUBECONFIG or in-cluster)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


async def run(args: argparse.Namespace, chain: Chain) -> int:
    status = None
    managed = True
    if args.channel_ref:
        body, status = await _status_of(args.channel_ref, args.kubeconfig)
        spec = PaymentChannelSpec.model_validate(body["spec"])
        managed = spec.payer.signing is SigningMode.MANAGED
        address = Address(status.address)
    else:
        address = args.address
    data = await report(chain, address, status, managed)
    if args.channel_ref:
        data["channel"] = args.channel_ref
    print(json.dumps(data, indent=2) if args.json else table(data))
    return 0 if data["ok"] else MISMATCH
