"""Where the story's money went, read the way a person checks it: `cocoon ton ledger` (the
channel's status reconciled against the chain) and the wallets' own transactions on the chain,
so every fee in the story's identities was charged on chain, none estimated."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cocoon.devstack.process import wait_for
from cocoon.ton.toncenter import ToncenterChain
from cocoon.ton.tvm import Address, raw


@dataclass(frozen=True)
class Books:
    """One channel's ledger as `cocoon ton ledger --json` reports it (chain-side figures)."""

    address: str
    owed: int
    promised: int
    claimed: int
    deposits: int
    paid_out: int
    refunded: int
    channel_fees: int
    claim_charges: int

    @property
    def unclaimed(self) -> int:
        """Signed by the payer, not claimed on chain yet."""
        return self.promised - self.claimed


def ledger(chain_url: str, target: str, kubeconfig: Path | None = None) -> Books:
    """Runs `cocoon ton ledger` on NAMESPACE/NAME (status and chain) or a channel address
    (chain only); raises with the command's own words unless every figure agrees."""
    where = ["--address", target] if "/" not in target else [target]
    if kubeconfig is not None:
        where += ["--kubeconfig", str(kubeconfig)]
    done = subprocess.run(
        [sys.executable, "-m", "cocoon.cli", "ton", "ledger", "--endpoint", chain_url, "--json",
         *where],
        capture_output=True, text=True, timeout=120, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"cocoon ton ledger {target} exited {done.returncode}: "
                           f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    data = json.loads(done.stdout)
    book = {k: int(v) for k, v in data["chain"]["ledger"].items()}
    status = data.get("status") or {}
    return Books(
        address=data["address"],
        owed=int(status.get("owed", book["claimed"])),
        promised=int(status.get("promised", book["claimed"])),
        claimed=int(data["chain"]["claimed"]),
        deposits=book["deposits"],
        paid_out=book["paidOut"],
        refunded=book["refunded"],
        channel_fees=book["channelFees"],
        claim_charges=book["claimCharges"],
    )


def received(chain_url: str, wallet: Address, sources: list[str]) -> tuple[int, int]:
    """What `wallet` received from `sources` (channel addresses), and the fees the chain charged
    it to receive them: both read from the wallet's transactions."""
    wanted = {raw(Address(s)) for s in sources}

    async def read() -> tuple[int, int]:
        async with ToncenterChain(chain_url) as chain:
            txs = await chain.transactions(wallet, limit=256)
        mine = [t for t in txs if t.in_source is not None and raw(t.in_source) in wanted]
        return sum(t.in_value for t in mine), sum(t.total_fees for t in mine)

    return asyncio.run(read())


def reconciled(chain_url: str, ref: str, kubeconfig: Path, timeout: float = 60) -> Books:
    """`cocoon ton ledger NAMESPACE/NAME` once every figure agrees (the operator records a
    pass's transactions at the end of that pass)."""
    found: list[Books] = []

    def agrees() -> bool:
        try:
            found.append(ledger(chain_url, ref, kubeconfig))
        except RuntimeError:
            return False
        return True

    wait_for(agrees, timeout=timeout, what=f"the ledger of {ref} to agree with the chain",
             interval=1.0)
    return found[-1]


def balance(chain_url: str, address: Address) -> int:
    async def read() -> int:
        async with ToncenterChain(chain_url) as chain:
            return (await chain.account(address)).balance

    return asyncio.run(read())


@dataclass(frozen=True)
class Settled:
    owed: int
    claimed: int
    unclaimed: int
    payee_received: int
    payee_fees: int  # claim charges (the ledgers) and the payee wallet's receiving fees
    payer_fees: int  # the closed channel's fees the payer bore, and its refund's receiving fee
    closed: Books


def settle(
    chain_url: str, kubeconfig: Path, open_ref: str, *, payee: Address, payer: Address,
    closed: str, closed_owed: int,
) -> Settled:
    """The money identities of a closed channel (by address: chain only) and an open one (by
    NAMESPACE/NAME: its status reconciled against the chain), both paying `payee`; exact, with
    every fee read from the chain. Raises naming the identity that does not hold."""
    main = ledger(chain_url, closed)
    other = reconciled(chain_url, open_ref, kubeconfig)
    if main.claimed != closed_owed:
        raise RuntimeError(f"the closed channel owed {closed_owed} but {main.claimed} was claimed")
    owed = closed_owed + other.owed
    claimed = main.claimed + other.claimed
    if owed != claimed + other.unclaimed:
        raise RuntimeError(f"owed {owed} != claimed {claimed} + unclaimed {other.unclaimed}")
    paid, receiving = received(chain_url, payee, [main.address, other.address])
    if paid != main.paid_out + other.paid_out:
        raise RuntimeError(
            f"the payee got {paid}, the ledgers paid out {main.paid_out} + {other.paid_out}"
        )
    payee_fees = main.claim_charges + other.claim_charges + receiving
    got = balance(chain_url, payee)
    if got != claimed - payee_fees:
        raise RuntimeError(f"the payee holds {got}, not claimed {claimed} - fees {payee_fees}")
    refunded, refund_fee = received(chain_url, payer, [main.address])
    if refunded != main.refunded:
        raise RuntimeError(f"the payer got {refunded}, the ledger refunded {main.refunded}")
    return Settled(
        owed=owed,
        claimed=claimed,
        unclaimed=other.unclaimed,
        payee_received=got,
        payee_fees=payee_fees,
        payer_fees=main.channel_fees - main.claim_charges + refund_fee,
        closed=main,
    )


@dataclass(frozen=True)
class Payout:
    """What one open channel paid its payee so far, every figure read from the chain."""

    books: Books
    payee_received: int
    payee_fees: int  # the ledger's claim charges and the payee wallet's receiving fees


def paid_out(chain_url: str, kubeconfig: Path, ref: str, *, payee: Address) -> Payout:
    """An open channel's claims as they landed in the payee's wallet (by NAMESPACE/NAME: its
    status reconciled against the chain); exact, raises naming the identity that does not
    hold. `settle` checks the same identities across a closed and an open channel."""
    books = reconciled(chain_url, ref, kubeconfig)
    if books.owed != books.claimed + books.unclaimed:
        raise RuntimeError(f"owed {books.owed} != claimed {books.claimed} + unclaimed "
                           f"{books.unclaimed}")
    paid, receiving = received(chain_url, payee, [books.address])
    if paid != books.paid_out:
        raise RuntimeError(f"the payee got {paid}, the ledger paid out {books.paid_out}")
    fees = books.claim_charges + receiving
    got = balance(chain_url, payee)
    if got != books.claimed - fees:
        raise RuntimeError(f"the payee holds {got}, not claimed {books.claimed} - fees {fees}")
    return Payout(books=books, payee_received=got, payee_fees=fees)
