"""The whole story on its own local stack, exactly as `make demo` tells it: attested nodes, a
pool placed on them, real Triton behind the real meter started from the rendered pod spec, paid
streamed calls, signed usage to promises to claims, a forged meter report refused, 402 and
top-up, and the close. The summary's numbers must agree with the chain's balances."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cocoon.devstack import picture
from cocoon.devstack.story import CLAIM_FEE_BOUND, Story, Summary, tell

pytestmark = [pytest.mark.e2e, pytest.mark.triton, pytest.mark.chain]


@pytest.fixture(scope="module")
def told(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Story, Summary]]:
    story = Story(tmp_path_factory.mktemp("story"))
    try:
        yield story, tell(story, requests=12)
    finally:
        story.stop()


def test_callers_pay_exactly_what_the_channel_owes(told: tuple[Story, Summary]) -> None:
    _, summary = told
    assert summary.nodes_attested == 2
    assert summary.requests_ok >= 13
    assert summary.output_tokens >= 12 * 16
    assert summary.cost_seen_by_callers == summary.owed > 0
    assert summary.requests_refused == {401: 1, 402: 1}


def test_the_provider_is_paid_what_was_claimed_less_fees(told: tuple[Story, Summary]) -> None:
    _, summary = told
    assert summary.claimed >= summary.owed - summary.owed // 10  # all of main, most of small
    assert summary.claimed - 4 * CLAIM_FEE_BOUND <= summary.payee_received <= summary.claimed
    assert summary.payer_refund > 0


def test_a_forged_meter_is_refused_and_counted(told: tuple[Story, Summary]) -> None:
    _, summary = told
    assert summary.rejected_reports == 1


def test_no_prompt_reaches_any_log(told: tuple[Story, Summary]) -> None:
    story, _ = told
    logs = "".join(p.read_text(errors="replace") for p in Path(story.workdir).rglob("*.log"))
    assert logs, "the stack wrote no logs at all"
    assert "a private prompt" not in logs
    assert "spend it all" not in logs


def test_the_picture_shows_the_channel(told: tuple[Story, Summary]) -> None:
    _, summary = told
    drawn = picture.svg(summary.samples, "channel")
    assert drawn.startswith("<svg") and drawn.count("<polyline") == 3
