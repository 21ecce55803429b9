import asyncio
import os
import random
import time

import pytest

from cocoon.meter.core import Meter, MeterConfig
from cocoon.meter.credits import ChannelCredit, StaticCreditSource, credential_hash
from cocoon.meter.errors import MeterError, Reason
from cocoon.meter.gate import CreditGate
from cocoon.meter.journal import Charge, Journal, parse_sync, read_charges
from cocoon.meter.metrics import MeterMetrics
from cocoon.meter.pricing import Price, Units

UNITS = Units(1, 2, 3)
PRICE = Price(per_request="10", per_output_token="1")


def _charge(request_id, channel="ns/a", cost=10, units=UNITS):
    now = time.time()
    return Charge(request_id, channel, "m", "infer", "ok", units, cost, now, now)


def test_gate_refuses_beyond_limit_and_counts_reservations():
    gate = CreditGate(spent=lambda ch: 40, max_in_flight=10)
    first = gate.reserve("ns/a", 100, 50)
    with pytest.raises(MeterError) as exc:
        gate.reserve("ns/a", 100, 20)
    assert exc.value.reason is Reason.NO_CREDIT
    assert "10 nanoton" in exc.value.message
    gate.release(first)
    gate.release(first)  # idempotent
    assert gate.remaining("ns/a", 100) == 60
    assert gate.in_flight == 0


def test_gate_overload_is_distinct_from_credit():
    gate = CreditGate(spent=lambda ch: 0, max_in_flight=1)
    gate.reserve("ns/a", 100, 1)
    with pytest.raises(MeterError) as exc:
        gate.reserve("ns/b", 100, 1)
    assert exc.value.reason is Reason.OVERLOADED


def test_gate_extend_only_within_credit():
    gate = CreditGate(spent=lambda ch: 0, max_in_flight=10)
    r = gate.reserve("ns/a", 100, 30)
    assert gate.extend(r, 90)
    assert not gate.extend(r, 101)
    assert r.amount == 90


async def test_journal_is_idempotent_and_recovers_totals(tmp_path):
    path = tmp_path / "j.db"
    journal = Journal(path)
    seqs = await asyncio.gather(*(journal.append(_charge(f"r{i}")) for i in range(50)))
    assert sorted(s for s in seqs if s is not None) == list(range(1, 51))
    assert await journal.append(_charge("r7")) is None  # same request id: not counted again
    assert journal.totals["ns/a"].cost_nanoton == 500
    assert journal.totals["ns/a"].units == Units(50, 100, 150)
    journal.close()
    reopened = Journal(path)
    assert reopened.totals["ns/a"].cost_nanoton == 500
    assert reopened.totals["ns/a"].units == Units(50, 100, 150)
    assert reopened.sequence == 50
    assert await reopened.append(_charge("r51")) == 51
    reopened.close()
    assert [c.request_id for c in read_charges(path)][-1] == "r51"


async def test_journal_group_commits_concurrent_charges(tmp_path):
    journal = Journal(tmp_path / "j.db")
    await asyncio.gather(*(journal.append(_charge(f"r{i}")) for i in range(200)))
    assert journal.batches < 200
    journal.close()


def _meter(tmp_path, limit, price=PRICE, **config):
    credits = StaticCreditSource({credential_hash("c"): ChannelCredit("ns/a", limit)})
    journal = Journal(tmp_path / "j.db")
    cfg = MeterConfig(pool="ns/p", price=price, reserve_output_tokens=4, **config)
    return Meter(cfg, credits, journal, MeterMetrics(["m"])), journal


async def test_concurrent_calls_never_overdraw(tmp_path):
    """Many calls race for a channel that can pay for a few; spend never exceeds the limit."""
    limit = 1000
    meter, journal = _meter(tmp_path, limit, max_in_flight=1000)
    served = rejected = 0

    async def one() -> None:
        nonlocal served, rejected
        try:
            call = meter.begin("Bearer c", "m", "http", "generate_stream", streaming=True)
        except MeterError as exc:
            assert exc.reason is Reason.NO_CREDIT
            rejected += 1
            return
        try:
            for _ in range(random.randint(0, 12)):
                await asyncio.sleep(0)
                trial = call.counter.copy()
                trial.add_response({})
                if not call.affordable(trial):
                    break
                call.counter = trial
            await call.settle("ok")
            served += 1
        finally:
            call.abandon()

    await asyncio.gather(*(one() for _ in range(400)))
    assert journal.spent("ns/a") <= limit
    assert served > 0 and rejected > 0
    assert meter.gate.in_flight == 0
    assert meter.gate.remaining("ns/a", limit) == limit - journal.spent("ns/a")
    journal.close()


async def test_bad_credentials_are_unauthenticated(tmp_path):
    meter, journal = _meter(tmp_path, 100)
    for header in (None, "", "Basic c", "Bearer wrong", "c"):
        with pytest.raises(MeterError) as exc:
            meter.begin(header, "m", "http", "infer")
        assert exc.value.reason is Reason.UNAUTHENTICATED
    assert meter.begin("bearer  c ", "m", "http", "infer").credit.channel == "ns/a"
    journal.close()


@pytest.mark.parametrize("mode", ["", "batch", "batch:0", "batch:x", "fsync", "batch:20000"])
def test_journal_sync_mode_is_validated(mode):
    with pytest.raises(ValueError, match="journal sync mode"):
        parse_sync(mode)


async def test_batch_journal_answers_before_fsync_and_flushes_soon(tmp_path):
    assert parse_sync("full") is None and parse_sync("batch:5") == 0.005
    journal = Journal(tmp_path / "j.db", sync="batch:20")
    assert journal.flushes == 0
    await asyncio.gather(*(journal.append(_charge(f"r{i}")) for i in range(50)))
    assert journal.spent("ns/a") == 500
    for _ in range(100):
        if journal.flushes:
            break
        await asyncio.sleep(0.01)
    assert journal.flushes >= 1
    journal.close()
    reopened = Journal(tmp_path / "j.db")
    assert reopened.spent("ns/a") == 500
    reopened.close()


async def test_journal_checkpoints_so_the_wal_stays_bounded(tmp_path):
    path = tmp_path / "j.db"
    journal = Journal(path, sync="batch:1")
    for i in range(1200):  # one commit each: several checkpoint rounds
        await journal.append(_charge(f"r{i}"))
    for _ in range(200):
        if journal.checkpoints >= 2:
            break
        await asyncio.sleep(0.01)
    assert journal.checkpoints >= 2
    assert _size(f"{path}-wal") < 16 << 20
    journal.close()
    reopened = Journal(path)
    assert reopened.spent("ns/a") == 12000 and reopened.sequence == 1200
    reopened.close()


def _size(path: str) -> int:
    return os.stat(path).st_size


def test_request_ids_are_unique_and_reveal_no_sequence(tmp_path):
    async def ids():
        meter, journal = _meter(tmp_path, 10**9)
        other, journal2 = _meter(tmp_path / "b", 10**9)
        out = [meter.next_request_id() for _ in range(2000)] + [other.next_request_id()]
        journal.close()
        journal2.close()
        return out

    out = asyncio.run(ids())
    assert len(set(out)) == len(out)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in out)
    assert out[1] != out[0] and int(out[1], 16) - int(out[0], 16) != 1
