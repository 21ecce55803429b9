"""The operator's recomputation of a report's cost and the maxPrice ceiling (pure, table-driven)."""

from __future__ import annotations

import pytest

from cocoon.meter.pricing import Price, Units
from cocoon.ton import price_bounds

PER_TOKEN = Price(per_request="5", per_input_token="2", per_output_token="3")
PER_THOUSAND = Price(per_input_token="1500", per_output_token="2500", per_tokens=1000)
CATEGORIES = Price(
    per_input_token="10", per_output_token="20", per_cached_input_token="1",
    per_reasoning_token="40",
)


@pytest.mark.parametrize(
    ("units", "cost", "price", "ok"),
    [
        (Units(1, 10, 4), 5 + 20 + 12, PER_TOKEN, True),
        (Units(1, 10, 4), 5 + 20 + 12 + 1, PER_TOKEN, False),  # a nanoton too much
        (Units(1, 10, 4), 5 + 20 + 12 - 1, PER_TOKEN, False),
        (Units(0, 0, 0), 10**18, PER_TOKEN, False),  # zero units claiming 1 GTON
        (Units(0, 0, 0), 0, PER_TOKEN, True),
        # per 1000 tokens: each call rounds up, so 3 calls may cost up to 2 nanoton more than
        # the summed units: ceil(3 * 1500 / 1000) = 5 .. 5 + 3
        (Units(3, 3, 0), 5, PER_THOUSAND, True),
        (Units(3, 3, 0), 8, PER_THOUSAND, True),
        (Units(3, 3, 0), 9, PER_THOUSAND, False),
        (Units(3, 3, 0), 4, PER_THOUSAND, False),
        # cached prompt and reasoning tokens have their own prices
        (Units(1, 10, 5, cached_input_tokens=4, reasoning_tokens=2), 6 * 10 + 4 + 3 * 20 + 80,
         CATEGORIES, True),
        (Units(1, 10, 5, cached_input_tokens=4, reasoning_tokens=2), 10 * 10 + 5 * 20,
         CATEGORIES, False),
    ],
)
def test_cost_is_recomputed_from_units(units: Units, cost: int, price: Price, ok: bool) -> None:
    assert (price_bounds.cost_refusal(units, cost, price) is None) is ok


@pytest.mark.parametrize(
    ("price", "ceiling", "over"),
    [
        (PER_TOKEN, PER_TOKEN, []),
        (PER_TOKEN, Price(per_request="5", per_input_token="2", per_output_token="2"),
         ["completion", "reasoning"]),
        (Price(per_request="6"), Price(per_request="5"), ["request"]),
        # 1500 per 1000 tokens is 1.5 per token: above 1, below 2
        (PER_THOUSAND, Price(per_input_token="1", per_output_token="3"), ["prompt", "cached"]),
        (PER_THOUSAND, Price(per_input_token="2", per_output_token="3"), []),
        (Price(per_input_token="1499", per_tokens=1000),
         Price(per_input_token="1500000", per_tokens=1000000), []),
        (CATEGORIES, Price(per_input_token="10", per_output_token="20"), ["reasoning"]),
    ],
)
def test_max_price_is_compared_per_category(price: Price, ceiling: Price, over: list[str]) -> None:
    assert price_bounds.above_max(price, ceiling) == over
