"""The durable journal of charges: SQLite in WAL mode.

One row per call, keyed by the meter's request id, written before the call's response completes
so that a crash loses nothing that was served. Rows hold only accounting fields, never content.
A streamed call's row is also written before each chunk of tokens is forwarded (`progress`: the
call's cumulative units so far, upserted), so a killed meter loses no delivered token's charge;
the file's schema and crash recovery are in `journal_db`.

Group commit without a thread hop per row: charges settled in the same event-loop iteration are
inserted and committed together on the loop (synchronous=NORMAL: one write() into the WAL, tens
of microseconds), and a sync thread makes them durable with one fsync of the WAL file. Commits
that arrive while an fsync runs share the next one. Automatic checkpoints are off on the loop's
connection (a checkpoint fsyncs the database): the sync thread checkpoints on its own connection
(RESTART, so the WAL is then rewritten in place rather than grown) every 256 commits,
and the loop, which never waits on a lock, retries its commit a moment later meanwhile.

Sync modes (`--journal-sync`):
- `full` (the default, and the mode for production pools): no caller is answered before the
  fsync covering its row has completed, the same guarantee as synchronous=FULL. A lone caller
  waits one fsync (~0.1-2 ms on a VM disk); concurrent callers share it. A stream's chunk waits
  only for its progress row to be written to the OS; those rows are fsynced within
  PROGRESS_SYNC_SECONDS, one fsync for all streams; the stream's final usage and receipt wait
  for the fsync covering its settled row (and so every row before it). A power loss can thus
  lose the charges of tokens delivered in the last PROGRESS_SYNC_SECONDS plus one fsync.
- `batch:<ms>`: a caller is answered once its row is written to the OS, and the WAL is fsynced
  every <ms> while there are unsynced rows. A killed meter (kill -9, OOM kill, crash) still loses
  nothing a client received, since the OS holds every completed write(); a power loss or kernel
  crash can lose the last ~<ms> of charges. It trades that for not waiting on the disk.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cocoon.meter.journal_db import (
    PROGRESS,
    SETTLE,
    TOTALS,
    Charge,
    connect,
    journal_id,
    read_charges,
    settle_interrupted,
)
from cocoon.meter.pricing import Units

__all__ = ["ChannelTotals", "Charge", "Journal", "parse_sync", "read_charges"]
log = logging.getLogger(__name__)

# Checkpoint (on the sync thread) after this many commits: each writes a few 4 KiB WAL
# frames, so the WAL stays within a few MiB and is rewritten in place.
_CHECKPOINT_COMMITS = 256
_BUSY_RETRY_SECONDS = 0.0002  # the loop's commit retries while a checkpoint holds the lock
# In `full` mode, how long a stream's progress rows may wait for their (shared) fsync.
PROGRESS_SYNC_SECONDS = 0.01


@dataclass(slots=True)
class ChannelTotals:
    units: Units = field(default_factory=Units)
    cost_nanoton: int = 0
    last_seq: int = 0


def parse_sync(mode: str) -> float | None:
    """`full` -> None; `batch:<ms>` -> seconds between WAL fsyncs."""
    if mode == "full":
        return None
    if mode.startswith("batch:"):
        try:
            ms = float(mode.removeprefix("batch:"))
        except ValueError:
            ms = -1.0
        if 0 < ms <= 10_000:
            return ms / 1000
    raise ValueError(f"journal sync mode {mode!r}: use 'full' or 'batch:<ms>' (0 < ms <= 10000)")


_CUMULATIVE_KEPT = 65536
_Pending = tuple[Charge, asyncio.Future[int | None], bool]  # the bool: a settled charge
_Committed = tuple[list[_Pending], list[int | None]]


class Journal:
    """Append charges durably and keep cumulative totals per channel in memory.

    `submit`/`append` resolve to the row's sequence number once committed (fsynced in `full`
    mode, written to the OS in `batch` mode), or None when a settled row with that request id
    already existed (idempotent: it is not counted again). Totals change on the loop before the
    future resolves, so callbacks on it see them. `progress` resolves once a stream's unsettled
    row is written to the OS; it counts in the totals only when settled (by `submit`, or by the
    next open after a crash), while the stream's credit reservation covers it. Use from one
    event loop.
    """

    def __init__(self, path: Path, sync: str = "full") -> None:
        self.path = path
        self.flush_interval = parse_sync(sync)
        self._db = connect(path)
        self.journal_id = journal_id(self._db)
        self.interrupted = settle_interrupted(self._db)
        if self.interrupted:
            log.warning("settled streams a crash cut, charging what they delivered",
                        extra={"streams": self.interrupted})
        self.totals: dict[str, ChannelTotals] = {}
        self._cumulative: dict[int, int] = {}
        self.sequence = 0
        for channel, req, inp, out, cached, reasoning, cost, seq in self._db.execute(TOTALS):
            self.totals[channel] = ChannelTotals(
                Units(req, inp, out, cached, reasoning), cost, seq
            )
            self.sequence = max(self.sequence, seq)
        self.batches = 0
        self.last_batch_size = 0
        self.flushes = 0
        self.checkpoints = 0
        self.busy_retries = 0
        self._pending: list[_Pending] = []
        self._scheduled = False
        # Shared with the sync thread, under _cond.
        self._cond = threading.Condition()
        self._awaiting_sync: list[_Committed] = []
        self._dirty = self.interrupted > 0  # settled on open: fsync them with the first sync
        self._stopping = False
        self._thread = threading.Thread(target=self._sync_loop, name="journal-sync", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def cumulative_at(self, seq: int | None, channel: str) -> int:
        """The channel's total right after row `seq` was counted (each receipt starts where the
        previous one of its channel ended, however charges were batched); read once."""
        if seq is None:
            return self.spent(channel)
        return self._cumulative.pop(seq, self.spent(channel))

    def spent(self, channel: str) -> int:
        totals = self.totals.get(channel)
        return totals.cost_nanoton if totals else 0

    def submit(self, charge: Charge) -> asyncio.Future[int | None]:
        """Queue a charge; it is committed with the others settled in this loop iteration."""
        return self._queue(charge, True)

    def progress(self, charge: Charge) -> asyncio.Future[int | None]:
        """Queue a stream's cumulative charge so far (resolves to None once written to the OS)."""
        return self._queue(charge, False)

    def _queue(self, charge: Charge, settled: bool) -> asyncio.Future[int | None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int | None] = loop.create_future()
        self._pending.append((charge, future, settled))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._commit_pending)
        return future

    async def append(self, charge: Charge) -> int | None:
        return await self.submit(charge)

    def _commit_pending(self) -> None:
        """On the loop: insert and commit every waiting row in one transaction (no fsync)."""
        self._scheduled = False
        batch, self._pending = self._pending, []
        if not batch:
            return
        results: list[int | None] = []
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY:
                self._fail_all(batch, exc)
                return
            # The sync thread is checkpointing: never block the loop; retry in a moment.
            self._pending[:0] = batch
            self._scheduled = True
            asyncio.get_running_loop().call_later(_BUSY_RETRY_SECONDS, self._commit_pending)
            self.busy_retries += 1
            return
        try:
            for charge, _, settled in batch:
                if settled:
                    returned = db.execute(SETTLE, charge.row()).fetchall()
                    results.append(returned[0][0] if returned else None)
                else:
                    db.execute(PROGRESS, charge.row())
                    results.append(None)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            self._fail_all(batch, exc)
            return
        self.batches += 1
        self.last_batch_size = len(batch)
        if self.flush_interval is not None:  # batch mode: the OS has it; answer now
            with self._cond:
                self._dirty = True
            self._resolve(batch, results)
            return
        # full mode: progress rows go on now (the OS has them; their fsync is shared), settled
        # rows once fsynced.
        waiting = [(i, p) for i, p in enumerate(batch) if p[2]]
        if len(waiting) < len(batch):
            for _, future, settled in batch:
                if not settled and not future.done():
                    future.set_result(None)
        with self._cond:
            wake = bool(waiting) or not self._dirty
            self._dirty = True
            if waiting:
                self._awaiting_sync.append(([p for _, p in waiting],
                                            [results[i] for i, _ in waiting]))
            if wake:
                self._cond.notify()

    def _sync_loop(self) -> None:
        """Make committed rows durable: in `full` mode as soon as a settled row waits (progress
        rows within PROGRESS_SYNC_SECONDS), in `batch` mode every interval; checkpoint on this
        thread's own connection when the WAL grows."""
        checkpointer = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=1.0
        )
        checkpointer.execute("PRAGMA synchronous=NORMAL")
        fd: int | None = None
        checkpointed_at = 0
        try:
            while True:
                with self._cond:
                    # full mode: settled rows at once; progress rows alone after a short
                    # wait, so that one fsync covers many chunks of many streams
                    while self.flush_interval is None and not (
                        self._awaiting_sync or self._stopping
                    ):
                        if self._dirty:
                            self._cond.wait_for(
                                lambda: self._awaiting_sync or self._stopping,
                                PROGRESS_SYNC_SECONDS,
                            )
                            break
                        self._cond.wait()
                    if self.flush_interval is not None and not self._stopping:
                        self._cond.wait(self.flush_interval)
                    waiting, self._awaiting_sync = self._awaiting_sync, []
                    dirty, self._dirty = self._dirty or bool(waiting), False
                    stopping = self._stopping
                error: OSError | None = None
                if dirty:
                    try:
                        fd = self._fsync_wal(fd)
                    except OSError as exc:
                        error = exc
                for batch, results in waiting:
                    if error is None:
                        self._call(batch, self._resolve, batch, results)
                    else:
                        self._call(batch, self._fail_all, batch, error)
                if self.batches - checkpointed_at >= _CHECKPOINT_COMMITS or (
                    stopping and self.batches > checkpointed_at
                ):
                    batches = self.batches
                    if self._checkpoint(checkpointer):
                        checkpointed_at = batches
                if stopping:
                    return
        finally:
            if fd is not None:
                os.close(fd)
            checkpointer.close()

    def _checkpoint(self, checkpointer: sqlite3.Connection) -> bool:
        """Copy the WAL into the database (fsynced) and have the next commit start the WAL
        over, so it is rewritten in place (cheap fdatasyncs) instead of growing."""
        try:
            checkpointer.execute("PRAGMA wal_checkpoint(RESTART)")
        except sqlite3.OperationalError:
            return False  # busy: try again after the next sync
        self.checkpoints += 1
        return True

    def _fsync_wal(self, fd: int | None) -> int | None:
        if fd is None:
            try:
                fd = os.open(f"{self.path}-wal", os.O_RDONLY)
            except FileNotFoundError:  # no WAL: nothing is waiting outside the database file
                return None
        # fdatasync, as SQLite itself uses: it flushes the data and the size, not the mtime
        # (a metadata-only journal commit per call on ext4 costs more than the data).
        os.fdatasync(fd)
        self.flushes += 1
        return fd

    @staticmethod
    def _call(batch: list[_Pending], callback: object, *args: object) -> None:
        loop = batch[0][1].get_loop()
        if not loop.is_closed():
            loop.call_soon_threadsafe(callback, *args)  # type: ignore[arg-type]

    def _fail_all(self, batch: list[_Pending], error: BaseException) -> None:
        for _, future, _ in batch:
            _fail(future, error)

    def _resolve(self, batch: list[_Pending], results: list[int | None]) -> None:
        """On the loop: count committed rows in the totals, then wake their callers."""
        for (charge, future, _), seq in zip(batch, results, strict=True):
            if seq is not None:
                totals = self.totals.setdefault(charge.channel, ChannelTotals())
                totals.units += charge.units
                totals.cost_nanoton += charge.cost_nanoton
                totals.last_seq = seq
                self.sequence = max(self.sequence, seq)
                if len(self._cumulative) > _CUMULATIVE_KEPT:  # callers that never read it
                    self._cumulative.clear()
                self._cumulative[seq] = totals.cost_nanoton
            if not future.done():
                future.set_result(seq)

    def close(self) -> None:
        """Commit what is waiting, make it durable, and stop (call on the journal's loop)."""
        self._db.execute("PRAGMA busy_timeout=5000")  # now waiting out a checkpoint is fine
        self._commit_pending()
        with self._cond:
            self._stopping = True
            self._dirty = True
            self._cond.notify()
        self._thread.join()
        self._db.close()


def _fail(future: asyncio.Future[int | None], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
