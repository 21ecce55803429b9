"""The journal's SQLite file: schema, rows, and what opening it after a crash settles.

One row per call, keyed by the meter's request id. A streamed call's row is written while it
streams (`settled = 0`, upserted with the call's cumulative units before each chunk is
forwarded) and settled once at its end, when it takes a fresh sequence number. A row left
unsettled by a crash is settled when the journal is next opened (outcome `interrupted`), so a
restart neither loses the tokens it delivered nor counts them twice.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cocoon.meter.pricing import Units

INTERRUPTED = "interrupted"
STREAMING = "streaming"

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
    cached_input_tokens INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens INTEGER NOT NULL DEFAULT 0,
    cost_nanoton INTEGER NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL NOT NULL,
    settled INTEGER NOT NULL DEFAULT 1
)
"""
_INSERT = (
    "INSERT INTO charges (request_id, channel, model, endpoint, outcome, requests, "
    "input_tokens, output_tokens, cached_input_tokens, reasoning_tokens, cost_nanoton, "
    "started_at, finished_at, settled) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
)
_UPDATE = (
    "ON CONFLICT (request_id) DO UPDATE SET outcome = excluded.outcome, "
    "requests = excluded.requests, input_tokens = excluded.input_tokens, "
    "output_tokens = excluded.output_tokens, "
    "cached_input_tokens = excluded.cached_input_tokens, "
    "reasoning_tokens = excluded.reasoning_tokens, cost_nanoton = excluded.cost_nanoton, "
    "finished_at = excluded.finished_at, settled = excluded.settled"
)
# A settled row is final: a repeated settle or a late progress write changes nothing.
# Settling a streamed row gives it the next sequence number, so a report that counts it always
# carries a higher journal sequence than any report sent before it.
_NEXT_SEQ = ", seq = (SELECT MAX(seq) FROM charges) + 1"
SETTLE = _INSERT + "1) " + _UPDATE + _NEXT_SEQ + " WHERE charges.settled = 0 RETURNING seq"
PROGRESS = _INSERT + "0) " + _UPDATE + " WHERE charges.settled = 0"
_SETTLE_INTERRUPTED = (
    "UPDATE charges SET settled = 1, outcome = ?, seq = (SELECT MAX(seq) FROM charges) + 1 "
    "WHERE seq = ?"
)
# Journals written before these columns existed gain them (zero, or settled, for old rows).
_ADDED_COLUMNS = {
    "cached_input_tokens": "INTEGER NOT NULL DEFAULT 0",
    "reasoning_tokens": "INTEGER NOT NULL DEFAULT 0",
    "settled": "INTEGER NOT NULL DEFAULT 1",
}
TOTALS = (
    "SELECT channel, SUM(requests), SUM(input_tokens), SUM(output_tokens), "
    "SUM(cached_input_tokens), SUM(reasoning_tokens), SUM(cost_nanoton), MAX(seq) "
    "FROM charges GROUP BY channel"
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
            u.requests, u.input_tokens, u.output_tokens, u.cached_input_tokens,
            u.reasoning_tokens, self.cost_nanoton,
            self.started_at, self.finished_at,
        )


def connect(path: Path) -> sqlite3.Connection:
    """The writer's connection: WAL, commits written but not fsynced (the sync thread does it),
    no automatic checkpoints (the sync thread does them too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute(_SCHEMA)
    db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    columns = {row[1] for row in db.execute("PRAGMA table_info(charges)")}
    for column, kind in _ADDED_COLUMNS.items():
        if column not in columns:
            db.execute(f"ALTER TABLE charges ADD COLUMN {column} {kind}")
    return db


def settle_interrupted(db: sqlite3.Connection) -> int:
    """Settle the rows of streams a crash cut, each with the next sequence number and the units
    it had journaled (all it delivered); returns how many."""
    unsettled = [row[0] for row in db.execute(
        "SELECT seq FROM charges WHERE settled = 0 ORDER BY seq")]
    if not unsettled:
        return 0
    db.execute("BEGIN IMMEDIATE")
    for seq in unsettled:
        db.execute(_SETTLE_INTERRUPTED, (INTERRUPTED, seq))
    db.execute("COMMIT")
    return len(unsettled)


def journal_id(db: sqlite3.Connection) -> str:
    """The journal's identity, made once with the file and durable with it.

    Usage is accounted per journal (a meter instance's cumulative sequence), so a container that
    restarts on the same journal continues its totals, while a new pod's new journal starts its
    own; the signing key changes at every start and only authenticates.
    """
    row = db.execute("SELECT value FROM meta WHERE key = 'journal_id'").fetchone()
    if row is not None:
        return str(row[0])
    made = secrets.token_hex(16)
    db.execute("INSERT INTO meta (key, value) VALUES ('journal_id', ?)", (made,))
    return made


def read_charges(path: Path) -> Iterable[Charge]:
    """Every row, in order (a streamed row still unsettled has outcome `streaming`): for audits
    and tests."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        for row in db.execute(
            "SELECT request_id, channel, model, endpoint, outcome, requests, input_tokens, "
            "output_tokens, cached_input_tokens, reasoning_tokens, cost_nanoton, started_at, "
            "finished_at FROM charges ORDER BY seq"
        ):
            yield Charge(row[0], row[1], row[2], row[3], row[4], Units(*row[5:10]),
                         row[10], row[11], row[12])
    finally:
        db.close()
