"""The durable journal of charges: SQLite in WAL mode with fsync on every commit.

One row per call, keyed by the meter's request id, written before the call's response completes
so that a crash loses nothing that was served. A single writer thread commits whatever rows are
waiting in one transaction (group commit): one fsync covers many concurrent calls, and no caller
is answered before its row is durable. Rows hold only accounting fields, never content.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cocoon.meter.pricing import Units

_SCHEMA = """
CREATE TABLE IF NOT EXISTS charges (
    seq INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE,
    channel TEXT NOT NULL,
    model TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    outcome TEXT NOT NULL,
    requests INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_nanoton INTEGER NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL NOT NULL
)
"""
_INSERT = (
    "INSERT OR IGNORE INTO charges (request_id, channel, model, endpoint, outcome, requests, "
    "input_tokens, output_tokens, cost_nanoton, started_at, finished_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_TOTALS = (
    "SELECT channel, SUM(requests), SUM(input_tokens), SUM(output_tokens), SUM(cost_nanoton), "
    "MAX(seq) FROM charges GROUP BY channel"
)


@dataclass(frozen=True, slots=True)
class Charge:
    """One journal row."""

    request_id: str
    channel: str
    model: str
    endpoint: str
    outcome: str
    units: Units
    cost_nanoton: int
    started_at: float
    finished_at: float

    def row(self) -> tuple[object, ...]:
        u = self.units
        return (
            self.request_id, self.channel, self.model, self.endpoint, self.outcome,
            u.requests, u.input_tokens, u.output_tokens, self.cost_nanoton,
            self.started_at, self.finished_at,
        )


@dataclass(slots=True)
class ChannelTotals:
    units: Units = field(default_factory=Units)
    cost_nanoton: int = 0
    last_seq: int = 0


def connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(_SCHEMA)
    return db


_Pending = tuple[Charge, asyncio.Future[int | None]]


class Journal:
    """Append charges durably and keep cumulative totals per channel in memory.

    `submit`/`append` resolve to the row's sequence number once committed, or None when a row
    with that request id already existed (idempotent: it is not counted again). Totals change
    on the loop before the future resolves, so callbacks on it see them.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = connect(path)
        self.totals: dict[str, ChannelTotals] = {}
        self.sequence = 0
        for channel, req, inp, out, cost, seq in self._db.execute(_TOTALS):
            self.totals[channel] = ChannelTotals(Units(req, inp, out), cost, seq)
            self.sequence = max(self.sequence, seq)
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write_loop, name="journal", daemon=True)
        self._thread.start()
        self.batches = 0
        self.last_batch_size = 0

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def spent(self, channel: str) -> int:
        totals = self.totals.get(channel)
        return totals.cost_nanoton if totals else 0

    def submit(self, charge: Charge) -> asyncio.Future[int | None]:
        """Queue a charge; the future resolves (on this loop) once the row is durable."""
        future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._queue.put((charge, future))
        return future

    async def append(self, charge: Charge) -> int | None:
        return await self.submit(charge)

    def _write_loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[_Pending]) -> None:
        results: list[int | None] = []
        try:
            self._db.execute("BEGIN IMMEDIATE")
            for charge, _ in batch:
                cursor = self._db.execute(_INSERT, charge.row())
                results.append(cursor.lastrowid if cursor.rowcount == 1 else None)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            error = exc
            for _, future in batch:
                future.get_loop().call_soon_threadsafe(_fail, future, error)
            return
        loop = batch[0][1].get_loop()
        loop.call_soon_threadsafe(self._resolve, batch, results)

    def _resolve(self, batch: list[_Pending], results: list[int | None]) -> None:
        """On the loop: count committed rows in the totals, then wake their callers."""
        self.batches += 1
        self.last_batch_size = len(batch)
        for (charge, future), seq in zip(batch, results, strict=True):
            if seq is not None:
                totals = self.totals.setdefault(charge.channel, ChannelTotals())
                totals.units += charge.units
                totals.cost_nanoton += charge.cost_nanoton
                totals.last_seq = seq
                self.sequence = max(self.sequence, seq)
            if not future.done():
                future.set_result(seq)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._db.close()


def _fail(future: asyncio.Future[int | None], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def read_charges(path: Path) -> Iterable[Charge]:
    """Every row, in order: for audits and tests."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        for row in db.execute(
            "SELECT request_id, channel, model, endpoint, outcome, requests, input_tokens, "
            "output_tokens, cost_nanoton, started_at, finished_at FROM charges ORDER BY seq"
        ):
            yield Charge(row[0], row[1], row[2], row[3], row[4], Units(row[5], row[6], row[7]),
                         row[8], row[9], row[10])
    finally:
        db.close()

