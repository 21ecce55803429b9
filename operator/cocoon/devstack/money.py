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
