"""TON settlement benchmark: promise throughput in Python, and on-chain fees of our channel on
the emulator (the real TVM, mainnet-like fees) next to the standard channel's measured figures.

    .venv/bin/python bench/bench_ton.py      # writes bench/results/ton.json
"""

from __future__ import annotations

import asyncio
import json
import platform
import time
from pathlib import Path
from typing import Any

from cocoon import keys
from cocoon.ton import emulator, promises
from cocoon.ton.channel import ChannelConfig, new_channel_id
from cocoon.ton.client import PaymentChannel
from cocoon.ton.settlement import Policy
from cocoon.ton.toncenter import ToncenterChain
from cocoon.ton.tvm import Address
from cocoon.ton.units import TON
from cocoon.ton.wallet import Wallet

PROMISES = 5_000
CLAIMS = 10
NOBODY = Address("0:" + "00" * 32)
RESULT = Path(__file__).parent / "results" / "ton.json"

# ton-blockchain/payment-channels, measured in the same emulator config (shared notes on TON).
STANDARD_CHANNEL = {
    "deploy_and_top_up_trace": 16_100_000,
    "init": 3_822_000,
    "cooperative_close_external": 6_960_662,
    "start_uncooperative_close": 5_622_400,
    "per_payout_close_topup_reinit": 18_000_000,
}


def promise_throughput() -> dict[str, float]:
    key = keys.generate()
    public = keys.public_bytes(key)
    channel = ChannelConfig(public, new_channel_id(), 3600, NOBODY, NOBODY)
    address = channel.address()
    start = time.perf_counter()
    signed = [promises.sign(key, address, channel.channel_id, n + 1) for n in range(PROMISES)]
    sign_s = time.perf_counter() - start
    start = time.perf_counter()
    assert all(promises.verify(public, p) for p in signed)
    verify_s = time.perf_counter() - start
    return {
        "signed_per_s": round(PROMISES / sign_s),
        "verified_per_s": round(PROMISES / verify_s),
        "sign_and_verify_per_s": round(PROMISES / (sign_s + verify_s)),
    }


async def lifecycle(url: str) -> dict[str, Any]:
    """deploy + top-up + CLAIMS external claims + close + withdraw, fees from balances."""
    async with ToncenterChain(url) as chain:
        payer_key = keys.generate()
        payer = Wallet(chain, payer_key)
        payee = Wallet(chain, keys.generate())
        funded = 30 * TON
        await emulator.faucet(url, payer.address, funded)
        config = ChannelConfig(
            keys.public_bytes(payer_key), new_channel_id(), 600, payer.address, payee.address
        )
        channel = PaymentChannel(chain, config)
        channel_fees: dict[str, int] = {}
        channel_fees["deploy_and_top_up"] = (await channel.deploy(payer, 10 * TON)).total_fees
        channel_fees["top_up"] = (await channel.top_up(payer, 10 * TON)).total_fees
        claim_fees, payee_costs = [], []
        for n in range(1, CLAIMS + 1):
            before = (await chain.account(payee.address)).balance
            tx = await channel.claim(
                promises.sign(payer_key, channel.address, config.channel_id, n * TON)
            )
            assert tx is not None
            claim_fees.append(tx.total_fees)
            payee_costs.append(TON - ((await chain.account(payee.address)).balance - before))
        channel_fees["claim_external"] = max(claim_fees)
        channel_fees["start_close_external"] = (await channel.start_close(payer_key)).total_fees
        await emulator.travel(url, 600)
        channel_fees["withdraw_external"] = (await channel.withdraw()).total_fees
        remaining = sum([(await chain.account(w.address)).balance for w in (payer, payee)])
        settled = CLAIMS * TON
        return {
            "claims": CLAIMS,
            "settled_nanoton": settled,
            "channel_tx_fees_nanoton": channel_fees,
            "payee_cost_per_claim_nanoton": max(payee_costs),
            # everything both parties lost: wallet deploy and transfers, channel, forward fees
            "lifecycle_total_fees_nanoton": funded - remaining,
            "lifecycle_fee_share_of_settled": round((funded - remaining) / settled, 6),
        }


def main() -> None:
    throughput = promise_throughput()
    with emulator.start() as running:
        fees = asyncio.run(lifecycle(running.url))
    policy = Policy()
    per_claim = fees["payee_cost_per_claim_nanoton"]
    report = {
        "machine": f"{platform.python_implementation()} {platform.python_version()}, one core",
        "promises": throughput,
        "emulator": "contracts/emulator (@ton/sandbox 0.41.0, mainnet-like config)",
        "ours": fees,
        "standard_channel_nanoton": STANDARD_CHANNEL,
        "at_default_thresholds": {
            "claim_threshold_nanoton": policy.claim_threshold,
            "claim_fee_share": round(per_claim / policy.claim_threshold, 6),
            "min_claim_fee_share": round(per_claim / policy.min_claim, 6),
            "standard_channel_payout_share": round(
                STANDARD_CHANNEL["per_payout_close_topup_reinit"] / policy.claim_threshold, 6
            ),
        },
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
