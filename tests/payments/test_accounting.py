"""The controller's pure decisions: report merging, credit split and the lifecycle state machine,
table-tested like a policy chain and property-tested where an invariant says it all."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cocoon.ton import accounting, settlement
from cocoon.ton.accounting import (
    CLAIM_GAS_CHARGE,
    Action,
    ChannelView,
    MeterUsage,
    OnChain,
    RejectReason,
    ReportRejected,
    Step,
    next_action,
)
from cocoon.ton.channel import State
from cocoon.ton.units import TON

A, B = "a" * 64, "b" * 64
POOL = "ns/pool"


def usage(key: str = A, seq: int = 1, cost: int = 100) -> MeterUsage:
    return MeterUsage(key, POOL, seq, cost)


# -- merging reports ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "report", "after"),
    [
        ([], usage(seq=1, cost=5), [usage(seq=1, cost=5)]),
        ([usage(seq=1, cost=5)], usage(seq=2, cost=9), [usage(seq=2, cost=9)]),
        ([usage(seq=2, cost=9)], usage(seq=2, cost=9), None),  # re-sent: no-op
        ([usage(seq=3, cost=9)], usage(seq=2, cost=5), None),  # older, arrived late: no-op
        ([usage(seq=1, cost=5)], usage(seq=2, cost=5), [usage(seq=2, cost=5)]),  # free calls
        ([usage(A, 1, 5)], usage(B, 1, 7), [usage(A, 1, 5), usage(B, 1, 7)]),
    ],
    ids=["first", "newer", "resent", "older", "same-cost", "second-meter"],
)
def test_merge_report(
    before: list[MeterUsage], report: MeterUsage, after: list[MeterUsage] | None
) -> None:
    assert accounting.merge_report(before, report) == after


@pytest.mark.parametrize(
    ("before", "report", "reason"),
    [
        ([usage(seq=2, cost=9)], usage(seq=2, cost=10), RejectReason.CONFLICT),
        ([usage(seq=2, cost=9)], usage(seq=3, cost=8), RejectReason.COST_DECREASED),
        (
            [usage(f"{i:064x}") for i in range(accounting.MAX_METERS)],
            usage(B),
            RejectReason.TOO_MANY_METERS,
        ),
    ],
    ids=["conflict", "decrease", "full"],
)
def test_merge_refuses_contradictions(
    before: list[MeterUsage], report: MeterUsage, reason: RejectReason
) -> None:
    with pytest.raises(ReportRejected) as refused:
        accounting.merge_report(before, report)
    assert refused.value.reason is reason


reports = st.lists(
    st.tuples(st.sampled_from([A, B]), st.integers(0, 20), st.integers(0, 10**12)), max_size=40
)


@given(reports)
def test_owed_is_the_sum_of_each_meters_highest_report(items: list[tuple[str, int, int]]) -> None:
    """Whatever order reports arrive in, each meter counts once, at its highest sequence."""
    meters: list[MeterUsage] = []
    best: dict[str, tuple[int, int]] = {}
    # cumulative reports: cost is monotonic in the sequence for a given meter
    items = [(k, s, s * 1000 + (c % 1000 if s else 0)) for k, s, c in items]
    for key, seq, cost in items:
        try:
            merged = accounting.merge_report(meters, MeterUsage(key, POOL, seq, cost))
        except ReportRejected:
            assert key in best and best[key][0] == seq  # same sequence, other cost
            continue
        if merged is not None:
            meters = merged
        if key not in best or seq > best[key][0]:
            best[key] = (seq, cost)
    assert accounting.total_owed(meters) == sum(c for _, c in best.values())


# -- credit -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("deposited", "promised", "window", "owed", "left"),
    [
        (10, 0, 4, 0, 4),  # before any promise: the window
        (10, 6, 4, 6, 4),  # window above the promise
        (10, 8, 4, 8, 2),  # capped by the deposit
        (10, 0, 4, 7, 0),  # overspent: never negative
        (0, 0, 4, 0, 0),  # nothing deposited, nothing served
    ],
)
def test_credit_left(deposited: int, promised: int, window: int, owed: int, left: int) -> None:
    assert accounting.credit_left(deposited, promised, window, owed) == left


@given(
    costs=st.dictionaries(st.sampled_from([A, B, "c" * 64, "d" * 64]), st.integers(0, 10**12)),
    deposited=st.integers(0, 10**13),
    promised=st.integers(0, 10**13),
    window=st.integers(0, 10**12),
    newcomer=st.booleans(),
)
def test_limits_never_exceed_the_cap(
    costs: dict[str, int], deposited: int, promised: int, window: int, newcomer: bool
) -> None:
    """Over one snapshot, what all meters may charge adds up to at most max(owed, cap)."""
    owed = sum(costs.values())
    remaining = accounting.credit_left(deposited, promised, window, owed)
    participants = set(costs) | ({"e" * 64} if newcomer else set())
    limits = [accounting.meter_limit(costs, participants, m, remaining) for m in participants]
    cap = accounting.credit_cap(deposited, promised, window)
    assert sum(limits) <= max(owed, cap)
    for meter in participants:
        assert accounting.meter_limit(costs, participants, meter, remaining) >= costs.get(meter, 0)
    if participants:
        assert sum(limits) == owed + remaining


def test_a_meter_not_yet_known_gets_a_share() -> None:
    assert accounting.meter_limit({A: 10}, {A}, B, 100) == 50
    assert accounting.meter_limit({A: 10}, {A}, A, 100) == 110
    assert accounting.meter_limit({A: 10}, {A, B}, A, 100) == 60


# -- funding and policy -------------------------------------------------------------------------


def test_funding_amounts_cover_fees_and_reserve() -> None:
    assert accounting.deploy_amount(TON) > TON + accounting.TOP_UP_FEE
    assert accounting.top_up_amount(2 * TON, 2 * TON) == 0
    assert accounting.top_up_amount(2 * TON, TON) > TON


@pytest.mark.parametrize("threshold", [1, CLAIM_GAS_CHARGE, 5_000_000, 10 * TON])
def test_claim_policy_stays_above_the_claim_gas(threshold: int) -> None:
    policy = accounting.claim_policy(threshold, 60)
    assert policy.min_claim > CLAIM_GAS_CHARGE
    assert policy.claim_threshold >= policy.min_claim


# -- the state machine --------------------------------------------------------------------------

NOW = 1_800_000_000
POLICY = accounting.claim_policy(TON, 3600)
OPEN = OnChain(State.OPEN, deposited=10 * TON, claimed=0, close_deadline=0)


def view(**changes: object) -> ChannelView:
    base = ChannelView(
        managed=True,
        deleting=False,
        abandon=False,
        prepared=True,
        chain=OPEN,
        deploy_in_flight=False,
        target_deposit=10 * TON,
        owed=0,
        promised=0,
        last_claim_at=NOW,
        now=NOW,
        policy=POLICY,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


CLOSING = replace(OPEN, state=State.CLOSING, close_deadline=NOW + 100)

TABLE: list[tuple[str, ChannelView, Step, str]] = [
    ("fresh channel gets an id", view(prepared=False, chain=None), Step.PREPARE, "NoChannelId"),
    ("deploy once prepared", view(chain=None), Step.DEPLOY, "NotDeployed"),
    (
        "a sent deploy is not repeated",
        view(chain=None, deploy_in_flight=True),
        Step.NOTHING,
        "DeployInFlight",
    ),
    (
        "client mode waits for the payer",
        view(chain=None, managed=False),
        Step.NOTHING,
        "AwaitingPayerDeploy",
    ),
    (
        "deleted before any id",
        view(prepared=False, chain=None, deleting=True),
        Step.RELEASE,
        "NeverDeployed",
    ),
    ("deleted before deploy", view(chain=None, deleting=True), Step.RELEASE, "NeverDeployed"),
    (
        "deleted while deploy in flight waits",
        view(chain=None, deleting=True, deploy_in_flight=True),
        Step.NOTHING,
        "DeployInFlight",
    ),
    ("abandon wins", view(deleting=True, abandon=True, owed=TON), Step.RELEASE, "Abandoned"),
    ("abandon needs deletion", view(abandon=True), Step.NOTHING, "Open"),
    ("open and settled", view(), Step.NOTHING, "Open"),
    ("usage gets a promise", view(owed=TON // 2), Step.SIGN_PROMISE, "UsageOwed"),
    ("client mode never signs", view(owed=TON // 2, managed=False), Step.NOTHING, "Open"),
    ("promise below threshold waits", view(owed=TON // 2, promised=TON // 2), Step.NOTHING, "Open"),
    ("threshold claims", view(owed=TON, promised=TON), Step.CLAIM, "ThresholdReached"),
    (
        "interval claims",
        view(owed=TON // 2, promised=TON // 2, last_claim_at=NOW - 3600),
        Step.CLAIM,
        "IntervalElapsed",
    ),
    (
        "never claimed counts as elapsed",
        view(owed=TON // 2, promised=TON // 2, last_claim_at=None),
        Step.CLAIM,
        "IntervalElapsed",
    ),
    (
        "claimed already",
        view(owed=TON, promised=TON, chain=replace(OPEN, claimed=TON)),
        Step.NOTHING,
        "Open",
    ),
    ("sign before claiming", view(owed=2 * TON, promised=TON), Step.SIGN_PROMISE, "UsageOwed"),
    (
        "promise capped at the deposit",
        view(owed=20 * TON, promised=10 * TON, chain=replace(OPEN, claimed=10 * TON)),
        Step.NOTHING,
        "Open",
    ),
    ("top up to the target", view(target_deposit=12 * TON), Step.TOP_UP, "BelowDeposit"),
    (
        "client mode does not top up",
        view(target_deposit=12 * TON, managed=False),
        Step.NOTHING,
        "Open",
    ),
    (
        "deletion claims first",
        view(deleting=True, owed=TON // 100, promised=TON // 100),
        Step.CLAIM,
        "ChannelClosing",
    ),
    (
        "deletion signs the last usage",
        view(deleting=True, owed=TON // 100),
        Step.SIGN_PROMISE,
        "UsageOwed",
    ),
    ("deletion then starts the close", view(deleting=True), Step.START_CLOSE, "Deleted"),
    (
        "dust below the claim gas is not claimed",
        view(deleting=True, owed=1000, promised=1000),
        Step.START_CLOSE,
        "Deleted",
    ),
    (
        "client mode: payer closes",
        view(deleting=True, managed=False),
        Step.RELEASE,
        "PayerClosesChannel",
    ),
    (
        "closing waits for the delay",
        view(deleting=True, chain=CLOSING),
        Step.NOTHING,
        "WaitingForCloseDelay",
    ),
    (
        "closing still claims",
        view(chain=CLOSING, owed=TON // 10, promised=TON // 10),
        Step.CLAIM,
        "ChannelClosing",
    ),
    (
        "withdraw after the delay",
        view(deleting=True, chain=CLOSING, now=NOW + 100),
        Step.WITHDRAW,
        "CloseDelayElapsed",
    ),
    (
        "closed and deleted",
        view(deleting=True, chain=replace(OPEN, state=State.CLOSED)),
        Step.RELEASE,
        "Closed",
    ),
    (
        "closed by someone else",
        view(chain=replace(OPEN, state=State.CLOSED)),
        Step.NOTHING,
        "Closed",
    ),
]


@pytest.mark.parametrize(("case", "channel", "step", "reason"), TABLE, ids=[t[0] for t in TABLE])
def test_next_action(case: str, channel: ChannelView, step: Step, reason: str) -> None:
    action = next_action(channel)
    assert (action.step, action.reason) == (step, reason), case


def test_actions_carry_amounts() -> None:
    assert next_action(view(owed=3 * TON)) == Action(Step.SIGN_PROMISE, "UsageOwed", 3 * TON)
    assert next_action(view(chain=None)).amount == accounting.deploy_amount(10 * TON)
    wait = next_action(view(chain=CLOSING))
    assert wait.retry_after == 100


@given(
    owed=st.integers(0, 30 * TON),
    promised=st.integers(0, 10 * TON),
    claimed=st.integers(0, 10 * TON),
    deleting=st.booleans(),
)
def test_promises_grow_and_stay_within_the_deposit(
    owed: int, promised: int, claimed: int, deleting: bool
) -> None:
    chain = replace(OPEN, claimed=min(claimed, promised))
    action = next_action(view(owed=owed, promised=promised, chain=chain, deleting=deleting))
    if action.step is Step.SIGN_PROMISE:
        settlement.check_promise(promised, action.amount, chain.deposited)
    if action.step is Step.CLAIM:
        assert action.amount == promised - chain.claimed > CLAIM_GAS_CHARGE
