"""Pure checks that bind a usage report's cost to the price a payer agreed to.

The operator never takes a meter's word for what calls cost: it recomputes the cost of the
reported units at the price the meter instance was started with (read from its pod at
registration), and refuses a meter whose price exceeds the channel's `maxPrice` in any unit
category, so a price change can never bill a payer more than they agreed to.
"""

from __future__ import annotations

from cocoon.meter.pricing import Price, Units
from cocoon.meter.usage_report import UsageUnits

CATEGORIES = ("request", "prompt", "completion", "cached", "reasoning")


def units_of(reported: UsageUnits) -> Units:
    return Units(
        reported.requests,
        reported.input_tokens,
        reported.output_tokens,
        reported.cached_input_tokens,
        reported.reasoning_tokens,
    )


def cost_bounds(units: Units, price: Price) -> tuple[int, int]:
    """The least and the most `units` may cost at `price`, summed over calls.

    A call's token cost is rounded up to a whole nanoton (prices per 1000 or 10^6 tokens), so
    a sum over calls exceeds the cost of the summed units by less than one nanoton per call."""
    tariff = price.tariff()
    least = tariff.cost(units)
    slack = units.requests if tariff.per_tokens > 1 else 0
    return least, least + slack


def cost_refusal(units: Units, cost: int, price: Price) -> str | None:
    """Why `cost` is not what `units` cost at `price`; None when it is."""
    least, most = cost_bounds(units, price)
    if least <= cost <= most:
        return None
    expected = str(least) if least == most else f"{least}..{most}"
    return (
        f"the report says {cost} nanoton for {units.header()}, which cost {expected} nanoton at "
        "this meter's price"
    )


def _rates(price: Price) -> dict[str, tuple[int, int]]:
    """Each category's price as a fraction (nanoton, per units)."""
    t = price.tariff()
    return {
        "request": (t.request, 1),
        "prompt": (t.prompt, t.per_tokens),
        "completion": (t.completion, t.per_tokens),
        "cached": (t.cached, t.per_tokens),
        "reasoning": (t.reasoning, t.per_tokens),
    }


def above_max(price: Price, max_price: Price) -> list[str]:
    """The unit categories in which `price` exceeds `max_price` (exact fraction comparison)."""
    asked, allowed = _rates(price), _rates(max_price)
    return [
        c
        for c in CATEGORIES
        if asked[c][0] * allowed[c][1] > allowed[c][0] * asked[c][1]
    ]
