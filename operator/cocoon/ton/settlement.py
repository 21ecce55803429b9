"""Settlement decisions as pure functions: what to sign, when to claim, when to top up.

The controller feeds them numbers it read (chain state, persisted promises, metered usage) and
acts on the answer; keeping them free of I/O is what lets the property tests cover them.
Invariants: a promise never exceeds the deposit, and cumulative amounts only ever grow.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from cocoon.ton.channel import EXTERNAL_CLAIM_GAS
from cocoon.ton.units import TON

# Above the external-claim gas charge (6,000 gas at 400 nanoton = 2.4 mTON), so that a claim
# always pays the payee more than it costs.
DEFAULT_MIN_CLAIM = 10_000_000
GAS_PRICE_NANOTON = 400


@dataclass(frozen=True)
class Policy:
    """Defaults follow COCOON's cadence: settle at 1 TON owed, or hourly with anything owed."""

    claim_threshold: int = TON
    claim_interval_s: int = 3600
    min_claim: int = DEFAULT_MIN_CLAIM
    top_up_below: int = TON // 2
    top_up_to: int = 5 * TON

    def __post_init__(self) -> None:
        if self.min_claim <= EXTERNAL_CLAIM_GAS * GAS_PRICE_NANOTON:
            raise ValueError("min_claim must exceed the gas an external claim is charged")
        if not 0 < self.min_claim <= self.claim_threshold:
            raise ValueError("need 0 < min_claim <= claim_threshold")
        if self.claim_interval_s <= 0 or not 0 <= self.top_up_below < self.top_up_to:
            raise ValueError("need a positive interval and top_up_below < top_up_to")


class ClaimReason(StrEnum):
    NOTHING = "NothingToClaim"
    CLOSING = "ChannelClosing"
    THRESHOLD = "ThresholdReached"
    INTERVAL = "IntervalElapsed"
    WAITING = "BelowThreshold"


@dataclass(frozen=True)
class ClaimDecision:
    claim: bool
    reason: ClaimReason
    amount: int  # what the claim would add to what was claimed


class PromiseError(ValueError):
    """A promise would break an invariant: the controller must not sign or use it."""


def next_promise(signed: int, owed: int, deposited: int) -> int | None:
    """The cumulative amount to sign now, or None when nothing new may be signed.

    `signed` is the last signed cumulative, `owed` the cumulative usage the payer owes, and
    `deposited` the channel's deposit: usage beyond it stays unsigned until a top-up.
    """
    target = min(owed, deposited)
    return target if target > signed else None


def check_promise(previous: int, cumulative: int, deposited: int) -> None:
    """Raises unless `cumulative` may follow `previous`: strictly greater, within the deposit."""
    if cumulative <= previous:
        raise PromiseError(f"cumulative {cumulative} does not exceed the previous {previous}")
    if cumulative > deposited:
        raise PromiseError(f"cumulative {cumulative} exceeds the deposit {deposited}")


def decide_claim(
    policy: Policy,
    *,
    signed: int,
    claimed: int,
    last_claim_at: int | None,
    now: int,
    closing: bool,
) -> ClaimDecision:
    """Whether the payee should claim its latest promise now."""
    amount = signed - claimed
    if amount <= 0:
        return ClaimDecision(False, ClaimReason.NOTHING, 0)
    if closing:
        return ClaimDecision(True, ClaimReason.CLOSING, amount)
    if amount >= policy.claim_threshold:
        return ClaimDecision(True, ClaimReason.THRESHOLD, amount)
    interval_elapsed = last_claim_at is None or now - last_claim_at >= policy.claim_interval_s
    if interval_elapsed and amount >= policy.min_claim:
        return ClaimDecision(True, ClaimReason.INTERVAL, amount)
    return ClaimDecision(False, ClaimReason.WAITING, amount)


def top_up_amount(policy: Policy, deposited: int, signed: int) -> int:
    """How much the payer should add so that unsigned headroom is back to `top_up_to`."""
    headroom = deposited - signed
    return policy.top_up_to - headroom if headroom < policy.top_up_below else 0
