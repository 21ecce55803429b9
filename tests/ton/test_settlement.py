"""Property tests of the settlement decisions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cocoon.ton.settlement import (
    ClaimReason,
    Policy,
    PromiseError,
    check_promise,
    decide_claim,
    next_promise,
    top_up_amount,
)
from cocoon.ton.units import TON

amounts = st.integers(min_value=0, max_value=10**15)
times = st.integers(min_value=0, max_value=2**40)
POLICY = Policy()


@given(signed=amounts, owed=amounts, deposited=amounts)
def test_next_promise_never_exceeds_deposit_and_always_grows(
    signed: int, owed: int, deposited: int
) -> None:
    result = next_promise(signed, owed, deposited)
    if result is None:
        assert min(owed, deposited) <= signed
    else:
        assert signed < result <= deposited
        assert result <= owed
        check_promise(signed, result, deposited)


@given(usage=st.lists(st.integers(min_value=0, max_value=10**12), max_size=50),
       top_ups=st.lists(st.integers(min_value=0, max_value=10**12), max_size=50))
def test_a_stream_of_usage_signs_a_strictly_increasing_bounded_sequence(
    usage: list[int], top_ups: list[int]
) -> None:
    signed, owed, deposited, history = 0, 0, 10**12, []
    for step, used in enumerate(usage):
        owed += used
        deposited += top_ups[step] if step < len(top_ups) else 0
        promise = next_promise(signed, owed, deposited)
        if promise is not None:
            history.append(promise)
            signed = promise
        assert signed <= deposited
    assert history == sorted(set(history))


@given(previous=amounts, cumulative=amounts, deposited=amounts)
def test_check_promise_rejects_exactly_the_invalid(
    previous: int, cumulative: int, deposited: int
) -> None:
    valid = previous < cumulative <= deposited
    if valid:
        check_promise(previous, cumulative, deposited)
    else:
        with pytest.raises(PromiseError):
            check_promise(previous, cumulative, deposited)


@given(signed=amounts, claimed=amounts, last=st.none() | times, now=times, closing=st.booleans())
def test_claim_decision_rules(
    signed: int, claimed: int, last: int | None, now: int, closing: bool
) -> None:
    decision = decide_claim(POLICY, signed=signed, claimed=claimed, last_claim_at=last, now=now,
                            closing=closing)
    pending = signed - claimed
    assert decision.claim == (decision.reason in {
        ClaimReason.CLOSING, ClaimReason.THRESHOLD, ClaimReason.INTERVAL})
    if pending <= 0:
        assert not decision.claim
        return
    assert decision.amount == pending
    if closing or pending >= POLICY.claim_threshold:
        assert decision.claim
    if decision.claim and not closing and pending < POLICY.claim_threshold:
        assert pending >= POLICY.min_claim
        assert last is None or now - last >= POLICY.claim_interval_s


@given(signed=amounts, claimed=amounts, last=times, now=times, later=st.integers(0, 2**20))
def test_waiting_longer_never_cancels_a_claim(
    signed: int, claimed: int, last: int, now: int, later: int
) -> None:
    def claims(at: int) -> bool:
        return decide_claim(POLICY, signed=signed, claimed=claimed, last_claim_at=last, now=at,
                            closing=False).claim

    if claims(now):
        assert claims(now + later)


@given(deposited=amounts, signed=amounts)
def test_top_up_restores_headroom(deposited: int, signed: int) -> None:
    amount = top_up_amount(POLICY, deposited, signed)
    headroom = deposited - signed
    if headroom < POLICY.top_up_below:
        assert deposited + amount - signed == POLICY.top_up_to
    else:
        assert amount == 0


@pytest.mark.parametrize("kwargs", [
    {"min_claim": 1},
    {"min_claim": 2 * TON},
    {"claim_interval_s": 0},
    {"top_up_below": 10, "top_up_to": 5},
])
def test_policy_rejects_unsound_settings(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        Policy(**kwargs)
