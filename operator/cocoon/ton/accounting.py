"""Pure decisions of the PaymentChannel controller: usage bookkeeping, credit, the next action.

The controller reads the channel (spec, persisted status, chain state) into a `ChannelView`,
asks `next_action` what to do, does exactly that one thing, persists what it learnt and asks
again. Each step is idempotent given what was persisted before it, which is what makes the
controller crash-safe: a crash between two steps re-runs from the persisted state.

Amounts and promise rules come from `settlement` (never re-derived here); what is added is the
bookkeeping of meters' cumulative reports, the split of credit between meters and the state
machine over the channel's lifecycle.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from cocoon.ton import settlement
from cocoon.ton.channel import EXTERNAL_CLAIM_GAS, STORAGE_RESERVE, TOP_UP_GAS, State

MAX_METERS = 256
# An external claim pays the payee its delta minus this flat charge; the contract refuses a
# claim whose delta does not exceed it.
CLAIM_GAS_CHARGE = EXTERNAL_CLAIM_GAS * settlement.GAS_PRICE_NANOTON
TOP_UP_FEE = TOP_UP_GAS * settlement.GAS_PRICE_NANOTON
# Sent on top of a deposit so storage fees never leave `deposited` just short of the target.
FUNDING_CUSHION = 5_000_000
DEPLOY_WAIT_S = 5


# -- usage reports ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeterUsage:
    """The highest cumulative report accepted from one meter journal for one channel."""

    instance: str
    pool: str
    journal_sequence: int
    cost: int


class RejectReason(StrEnum):
    """Bounded label values for `cocoon_usage_reports_rejected_total{reason}`."""

    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad_signature"
    UNATTESTED = "unattested"
    UNKNOWN_CHANNEL = "unknown_channel"
    WRONG_POOL = "wrong_pool"
    CONFLICT = "conflict"
    COST_DECREASED = "cost_decreased"
    TOO_MANY_METERS = "too_many_meters"
    MISPRICED = "mispriced"
    PRICE_ABOVE_MAX = "price_above_max"


class ReportRejected(ValueError):
    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def merge_report(meters: list[MeterUsage], report: MeterUsage) -> list[MeterUsage] | None:
    """The meters after accepting `report`, or None when it changes nothing (a re-send).

    Reports are cumulative, so only the highest journal sequence counts; an older or repeated
    one is a no-op, and one that contradicts what was accepted is refused.
    """
    key = (report.instance, report.pool)
    current = next((m for m in meters if (m.instance, m.pool) == key), None)
    if current is None:
        if len(meters) >= MAX_METERS:
            raise ReportRejected(
                RejectReason.TOO_MANY_METERS,
                f"the channel already tracks {MAX_METERS} meters; retire old pods' channels",
            )
        return [*meters, report]
    if report.journal_sequence < current.journal_sequence:
        return None
    if report.journal_sequence == current.journal_sequence:
        if report.cost != current.cost:
            raise ReportRejected(
                RejectReason.CONFLICT,
                f"journal sequence {report.journal_sequence} was accepted with cost "
                f"{current.cost}, this report says {report.cost}",
            )
        return None
    if report.cost < current.cost:
        raise ReportRejected(
            RejectReason.COST_DECREASED,
            f"cumulative cost fell from {current.cost} to {report.cost} at a later sequence",
        )
    return [report if (m.instance, m.pool) == key else m for m in meters]


def total_owed(meters: Iterable[MeterUsage]) -> int:
    return sum(m.cost for m in meters)


# -- credit -------------------------------------------------------------------------------------


def credit_cap(deposited: int, promised: int, window: int) -> int:
    """The most callers may be served in total: the promise plus the window, within the deposit."""
    return min(deposited, promised + window)


def credit_left(deposited: int, promised: int, window: int, owed: int) -> int:
    return max(0, credit_cap(deposited, promised, window) - owed)


def meter_limit(
    costs: dict[str, int], participants: set[str], meter: str, remaining: int
) -> int:
    """The cumulative limit `meter` may charge: its own reported cost plus an equal share of the
    remaining credit among `participants` (the attested meters of the channel, itself included).

    Over any one snapshot the limits add up to at most owed + remaining, so never beyond the
    deposit; the first participant in key order takes the remainder of the division.
    """
    everyone = sorted(participants | {meter})
    share, extra = divmod(max(0, remaining), len(everyone))
    return costs.get(meter, 0) + share + (extra if everyone[0] == meter else 0)


# -- funding ------------------------------------------------------------------------------------


def deploy_amount(target: int) -> int:
    """What the payer wallet sends with the StateInit so that `deposited` reaches `target`.

    The contract credits value minus the top-up gas, capped at balance minus its storage
    reserve, so the reserve and the fee ride on top.
    """
    return target + TOP_UP_FEE + STORAGE_RESERVE + FUNDING_CUSHION


def top_up_amount(target: int, deposited: int) -> int:
    shortfall = target - deposited
    return shortfall + TOP_UP_FEE + FUNDING_CUSHION if shortfall > 0 else 0


def claim_policy(threshold: int, interval_s: int) -> settlement.Policy:
    """settlement.Policy from the spec; the minimum claim stays above the claim's own gas."""
    floor = CLAIM_GAS_CHARGE + 1
    min_claim = max(floor, min(settlement.DEFAULT_MIN_CLAIM, threshold))
    return settlement.Policy(
        claim_threshold=max(threshold, min_claim),
        claim_interval_s=interval_s,
        min_claim=min_claim,
    )


# -- the lifecycle state machine ----------------------------------------------------------------


@dataclass(frozen=True)
class OnChain:
    state: State
    deposited: int
    claimed: int
    close_deadline: int


@dataclass(frozen=True)
class ChannelView:
    """Everything `next_action` needs, read by the controller."""

    managed: bool
    deleting: bool
    abandon: bool
    prepared: bool  # channel id and parameters persisted
    chain: OnChain | None  # None: not deployed
    deploy_in_flight: bool  # the payer wallet already sent to the channel address
    target_deposit: int
    owed: int
    promised: int
    last_claim_at: int | None
    now: int
    policy: settlement.Policy
    rotate_key: bool = False  # a promise key rotation was asked for and not done yet


class Step(StrEnum):
    PREPARE = "Prepare"
    DEPLOY = "Deploy"
    TOP_UP = "TopUp"
    SIGN_PROMISE = "SignPromise"
    ROTATE_KEY = "RotateKey"
    CLAIM = "Claim"
    START_CLOSE = "StartClose"
    WITHDRAW = "Withdraw"
    RELEASE = "Release"
    NOTHING = "Nothing"


@dataclass(frozen=True)
class Action:
    step: Step
    reason: str
    amount: int = 0  # nanoton to send (Deploy, TopUp), cumulative to sign, or claim delta
    retry_after: int | None = None  # for Nothing: when to look again, seconds


def _claim(view: ChannelView, chain: OnChain, closing: bool) -> Action | None:
    decision = settlement.decide_claim(
        view.policy,
        signed=view.promised,
        claimed=chain.claimed,
        last_claim_at=view.last_claim_at,
        now=view.now,
        closing=closing,
    )
    if decision.claim and decision.amount > CLAIM_GAS_CHARGE:
        return Action(Step.CLAIM, decision.reason.value, decision.amount)
    return None


def _sign(view: ChannelView, chain: OnChain) -> Action | None:
    if not view.managed:
        return None
    cumulative = settlement.next_promise(view.promised, view.owed, chain.deposited)
    return None if cumulative is None else Action(Step.SIGN_PROMISE, "UsageOwed", cumulative)


def next_action(view: ChannelView) -> Action:
    """The one thing to do next; `Nothing` and `Release` end a reconcile pass."""
    if view.deleting and view.abandon:
        return Action(Step.RELEASE, "Abandoned")
    if not view.prepared:
        if view.deleting:
            return Action(Step.RELEASE, "NeverDeployed")
        return Action(Step.PREPARE, "NoChannelId")
    chain = view.chain
    if chain is None:
        if view.deploy_in_flight:
            return Action(Step.NOTHING, "DeployInFlight", retry_after=DEPLOY_WAIT_S)
        if view.deleting:
            return Action(Step.RELEASE, "NeverDeployed")
        if view.managed:
            return Action(Step.DEPLOY, "NotDeployed", deploy_amount(view.target_deposit))
        return Action(Step.NOTHING, "AwaitingPayerDeploy")
    if chain.state is State.CLOSED:
        return Action(Step.RELEASE, "Closed") if view.deleting else Action(Step.NOTHING, "Closed")
    closing = view.deleting or chain.state is State.CLOSING
    action = _sign(view, chain) or _claim(view, chain, closing)
    if action is not None:
        return action
    if chain.state is State.CLOSING:
        wait = chain.close_deadline - view.now
        if wait <= 0:
            return Action(Step.WITHDRAW, "CloseDelayElapsed")
        return Action(Step.NOTHING, "WaitingForCloseDelay", retry_after=wait)
    if view.deleting:
        if view.managed:
            return Action(Step.START_CLOSE, "Deleted")
        return Action(Step.RELEASE, "PayerClosesChannel")
    if view.rotate_key and view.managed:  # after signing: nothing owed waits on the old key
        return Action(Step.ROTATE_KEY, "RotationRequested")
    amount = top_up_amount(view.target_deposit, chain.deposited)
    if amount and view.managed:
        return Action(Step.TOP_UP, "BelowDeposit", amount)
    return Action(Step.NOTHING, "Open")
