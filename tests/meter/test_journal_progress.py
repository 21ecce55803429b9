"""Streamed charges in the journal: progress rows, settling, crash recovery, and the WAL fsync."""

import asyncio
import os
import time
from pathlib import Path

import pytest

from cocoon.meter import journal as journal_module
from cocoon.meter.core import Meter, MeterConfig
from cocoon.meter.credits import ChannelCredit, StaticCreditSource, credential_hash
from cocoon.meter.journal import Charge, Journal, read_charges
from cocoon.meter.metrics import MeterMetrics
from cocoon.meter.pricing import Price, Units


def _charge(request_id: str, output: int, outcome: str = "ok", channel: str = "ns/a") -> Charge:
    now = time.time()
    return Charge(request_id, channel, "m", "generate_stream", outcome, Units(1, 0, output),
                  output * 10, now, now)


async def test_progress_rows_count_once_settled_and_never_twice(tmp_path):
    journal = Journal(tmp_path / "j.db")
    assert await journal.append(_charge("unary", 1)) == 1
    for output in (1, 2, 3):
        assert await journal.progress(_charge("s", output, "streaming")) is None
    assert journal.spent("ns/a") == 10  # the stream's reservation covers it until it settles
    (_, row) = read_charges(journal.path)
    assert (row.outcome, row.units.output_tokens) == ("streaming", 3)
    assert await journal.append(_charge("other", 1)) == 3
    seq = await journal.append(_charge("s", 4))
    assert seq == 4  # settling takes the next sequence, above every report already sent
    assert journal.cumulative_at(seq, "ns/a") == 60
    assert await journal.append(_charge("s", 9)) is None  # settled: a repeat changes nothing
    await journal.progress(_charge("s", 9, "streaming"))  # nor does a late progress write
    assert journal.spent("ns/a") == 60 and journal.sequence == 4
    journal.close()
    reopened = Journal(tmp_path / "j.db")
    assert reopened.interrupted == 0 and reopened.spent("ns/a") == 60
    reopened.close()


async def test_reopening_settles_a_cut_stream_with_what_it_delivered(tmp_path):
    journal = Journal(tmp_path / "j.db")
    await journal.append(_charge("before", 1))
    await journal.progress(_charge("cut", 5, "streaming"))
    await journal.append(_charge("after", 1))
    reported = journal.sequence
    journal.close()  # the stream never settled, as after kill -9
    reopened = Journal(tmp_path / "j.db")
    assert reopened.interrupted == 1
    assert reopened.spent("ns/a") == 70
    assert reopened.sequence > reported  # a report counting it carries a higher sequence
    rows = {c.request_id: c for c in read_charges(reopened.path)}
    assert rows["cut"].outcome == "interrupted" and rows["cut"].units.output_tokens == 5
    assert await reopened.append(_charge("cut", 6)) is None  # settled once, for good
    reopened.close()
    again = Journal(tmp_path / "j.db")
    assert again.interrupted == 0 and again.spent("ns/a") == 70
    again.close()


def _wal_syncs(monkeypatch: pytest.MonkeyPatch, path: Path) -> list[int]:
    """Record every fdatasync the journal makes on its WAL file (checked by the descriptor's
    path), then let the real call run: deleting the journal's sync leaves this list empty."""
    synced: list[int] = []
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        real(fd)
        if os.readlink(f"/proc/self/fd/{fd}") == f"{path}-wal":
            synced.append(os.fstat(fd).st_size)

    monkeypatch.setattr(journal_module.os, "fdatasync", fdatasync)
    return synced


async def test_full_mode_answers_only_after_the_wal_is_fdatasynced(tmp_path, monkeypatch):
    path = tmp_path / "j.db"
    synced = _wal_syncs(monkeypatch, path)
    journal = Journal(path)
    for i in range(3):
        assert await journal.append(_charge(f"r{i}", 1)) == i + 1
        # this row's WAL frames were on the disk before the future resolved
        assert len(synced) >= i + 1 and synced[-1] >= os.stat(f"{path}-wal").st_size
    journal.close()


async def test_progress_rows_are_fdatasynced_in_groups_without_a_settle(tmp_path, monkeypatch):
    path = tmp_path / "j.db"
    synced = _wal_syncs(monkeypatch, path)
    journal = Journal(path)
    await asyncio.gather(*(journal.progress(_charge(f"s{i}", 1, "streaming"))
                           for i in range(50)))
    for output in range(2, 40):
        await journal.progress(_charge("s0", output, "streaming"))
    assert journal.batches == 39  # answered once written: one commit per loop iteration
    for _ in range(500):
        if synced and synced[-1] >= os.stat(f"{path}-wal").st_size:
            break
        await asyncio.sleep(0.01)
    assert synced and synced[-1] >= os.stat(f"{path}-wal").st_size
    assert len(synced) < journal.batches  # grouped: never one fsync per chunk
    journal.close()


async def test_batch_mode_fdatasyncs_the_wal_within_its_interval(tmp_path, monkeypatch):
    path = tmp_path / "j.db"
    synced = _wal_syncs(monkeypatch, path)
    journal = Journal(path, sync="batch:20")
    await asyncio.gather(*(journal.append(_charge(f"r{i}", 1)) for i in range(20)))
    for _ in range(500):
        if synced:
            break
        await asyncio.sleep(0.01)
    assert synced
    journal.close()


async def test_a_call_journals_each_chunk_before_it_leaves_and_settles_once(tmp_path):
    credits = StaticCreditSource({credential_hash("c"): ChannelCredit("ns/a", 10**9)})
    journal = Journal(tmp_path / "j.db")
    price = Price(per_request="100", per_input_token="10", per_output_token="1")
    meter = Meter(MeterConfig(pool="ns/p", price=price), credits, journal, MeterMetrics(["m"]))
    call = meter.begin("Bearer c", "m", "http", "chat.completions", streaming=True)
    for expected in (1, 2):
        trial = call.counter.copy()
        trial.add_response({})
        assert call.affordable(trial)
        await call.deliver(trial, counted_prompt=5)
        (row,) = read_charges(journal.path)
        assert (row.outcome, row.units) == ("streaming", Units(1, 5, expected))
        assert row.cost_nanoton == price.cost(row.units)
    batches = journal.batches
    await call.deliver(call.counter.copy(), counted_prompt=5)  # nothing new: nothing written
    assert journal.batches == batches
    assert journal.spent("ns/a") == 0  # the reservation holds it until the call settles
    call.counter.input_tokens = 5
    settlement = await call.settle("ok")
    call.abandon()
    (row,) = read_charges(journal.path)
    assert (row.outcome, row.units) == ("ok", Units(1, 5, 2))
    assert journal.spent("ns/a") == settlement.cost_nanoton == price.cost(Units(1, 5, 2))
    assert meter.gate.in_flight == 0
    journal.close()
