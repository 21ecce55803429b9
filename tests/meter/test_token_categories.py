"""Token categories (prompt, cached prompt, completion, reasoning), their prices, and where
they flow: usage tensors, the journal (old journals migrate), signed usage reports, CLI flags."""

import argparse
import sqlite3
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from cocoon import keys
from cocoon.meter import cli, pricing
from cocoon.meter.journal import Charge, Journal, read_charges
from cocoon.meter.pricing import Price, Units
from cocoon.meter.usage import UsageCounter, generate_usage
from cocoon.meter.usage_report import UsageReport, UsageUnits, sign, verify

PRICE = Price(
    per_request="1000", per_input_token="10", per_output_token="100",
    per_cached_input_token="1", per_reasoning_token="300",
)


@pytest.mark.parametrize(("units", "cost"), [
    (Units(1, 0, 0), 1000),
    (Units(1, 20, 0), 1000 + 200),
    (Units(1, 20, 0, cached_input_tokens=15), 1000 + 5 * 10 + 15 * 1),
    (Units(1, 0, 8), 1000 + 800),
    (Units(1, 0, 8, reasoning_tokens=3), 1000 + 5 * 100 + 3 * 300),
    (Units(2, 20, 8, 15, 3), 2000 + 50 + 15 + 500 + 900),
    # A category cannot exceed its parent: cached beyond the prompt is capped at the prompt.
    (Units(1, 4, 0, cached_input_tokens=9), 1000 + 4 * 1),
    (Units(1, 0, 2, reasoning_tokens=9), 1000 + 2 * 300),
])
def test_each_category_has_its_own_price(units, cost):
    assert PRICE.cost(units) == cost


def test_cached_and_reasoning_prices_default_to_prompt_and_completion():
    price = Price(per_input_token="10", per_output_token="100")
    assert price.cost(Units(0, 20, 8, 15, 3)) == 20 * 10 + 8 * 100


@pytest.mark.parametrize(("per_tokens", "units", "cost"), [
    (1, Units(0, 3, 0), 3 * 250),
    (1000, Units(0, 4, 0), 1),          # 4 * 250 / 1000 = 1.0
    (1000, Units(0, 5, 0), 2),          # 1.25, rounded up
    (1000000, Units(0, 1, 0), 1),       # any token costs at least a nanoton
    (1000000, Units(0, 4000, 0), 1),    # 4000 * 250 / 1e6 = 1.0
    (1000000, Units(0, 4001, 0), 2),    # 1.00025, rounded up
    (1000000, Units(3, 4000, 0), 3 * 7 + 1),  # the request price is never divided
])
def test_token_prices_per_block_round_up_per_call(per_tokens, units, cost):
    price = Price(per_request="7", per_input_token="250", per_tokens=per_tokens)
    assert price.cost(units) == cost


def test_price_block_must_be_one_thousand_or_million():
    with pytest.raises(ValidationError):
        Price.model_validate({"perTokens": 100})
    assert Price.model_validate({"perTokens": 1000000}).per_tokens == 1000000


def test_existing_price_fields_keep_their_meaning():
    old = Price.model_validate({"perRequest": "5", "perInputToken": "3", "perOutputToken": "7"})
    assert old.cost(Units(1, 2, 4)) == 5 + 6 + 28


def test_counter_reads_cached_and_reasoning_usage():
    counter = UsageCounter(streaming=True)
    counter.add_response({})
    counter.add_response(generate_usage({
        "prompt_tokens": 12, "cached_prompt_tokens": 8, "completion_tokens": 5,
        "reasoning_tokens": 2, "text_output": "x",
    }))
    assert counter.units() == Units(1, 12, 5, 8, 2)


def test_units_header_carries_categories_only_when_present():
    assert Units(1, 2, 3).header() == "requests=1, input_tokens=2, output_tokens=3"
    full = Units(1, 12, 5, 8, 2)
    assert "cached_input_tokens=8" in full.header()
    assert Units.parse_header(full.header()) == full


def _charge(request_id, units):
    return Charge(request_id, "ns/a", "llm", "chat.completions", "ok", units, PRICE.cost(units),
                  1.0, 2.0)


async def test_journal_stores_and_totals_categories(tmp_path):
    path = tmp_path / "j.db"
    journal = Journal(path)
    await journal.append(_charge("r1", Units(1, 12, 5, 8, 2)))
    await journal.append(_charge("r2", Units(1, 3, 4)))
    journal.close()
    reopened = Journal(path)
    assert reopened.totals["ns/a"].units == Units(2, 15, 9, 8, 2)
    reopened.close()
    assert [c.units for c in read_charges(path)] == [Units(1, 12, 5, 8, 2), Units(1, 3, 4)]


async def test_a_journal_from_before_categories_is_migrated_with_its_totals(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE charges (seq INTEGER PRIMARY KEY, request_id TEXT NOT NULL UNIQUE, "
        "channel TEXT NOT NULL, model TEXT NOT NULL, endpoint TEXT NOT NULL, outcome TEXT NOT "
        "NULL, requests INTEGER NOT NULL, input_tokens INTEGER NOT NULL, output_tokens INTEGER "
        "NOT NULL, cost_nanoton INTEGER NOT NULL, started_at REAL NOT NULL, finished_at REAL "
        "NOT NULL)"
    )
    db.execute("INSERT INTO charges VALUES (1, 'old', 'ns/a', 'm', 'infer', 'ok', 1, 3, 4, 99, "
               "1.0, 2.0)")
    db.commit()
    db.close()
    journal = Journal(path)
    assert journal.totals["ns/a"].units == Units(1, 3, 4)
    assert journal.totals["ns/a"].cost_nanoton == 99
    assert await journal.append(_charge("new", Units(1, 10, 2, 6, 1))) == 2
    assert journal.totals["ns/a"].units == Units(2, 13, 6, 6, 1)
    journal.close()


def test_signed_usage_report_carries_categories_and_detects_their_alteration():
    key = keys.generate()
    report = UsageReport(
        meter_public_key=keys.public_bytes(key).hex(), journal_id="0a" * 16, pool="ns/p",
        channel="ns/a",
        units=UsageUnits(**Units(3, 30, 9, 20, 4).as_dict()), cost_nanoton="5",
        journal_sequence=3, issued_at=datetime.now(UTC).replace(microsecond=0),
    )
    signed = sign(report, key)
    assert verify(signed).units.cached_input_tokens == 20
    forged = signed.model_copy(deep=True)
    forged.report.units.reasoning_tokens = 0
    with pytest.raises(ValueError, match=r"(?i)signature"):
        verify(forged)


def test_cli_flags_carry_every_price_field():
    parser = argparse.ArgumentParser()
    cli.register(parser)
    price = Price(per_request="1", per_input_token="2", per_output_token="3",
                  per_cached_input_token="0", per_reasoning_token="9", per_tokens=1000000)
    args = parser.parse_args([
        "serve", "--pool=a/b", "--journal=j", "--credits=c", "--plaintext", *price.cli_args(),
    ])
    assert pricing.from_namespace(args) == price
    # and the operator reads the same price back from a pod's arguments
    assert pricing.from_cli_args(price.cli_args()) == price
