"""The caller's receipt store: every verified receipt, with the attested key it was checked by.

SQLite in `$COCOON_RECEIPTS`, else `$XDG_DATA_HOME/cocoon/receipts.db` (default
`~/.local/share/cocoon/receipts.db`). `verify` re-checks every stored signature against the key
the endpoint's evidence bound when the receipt arrived, and checks the sums: per channel and
meter instance, ordered by the meter's cumulative total, each receipt must start where the
previous ended. A receipt that starts earlier is an overlapping (double) charge; one that starts
later leaves a gap of charges this store never saw (other clients on the same channel, or
receipts lost), reported as unaccounted.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cocoon.client.errors import ReceiptRefused
from cocoon.meter import receipts
from cocoon.meter.receipts import Receipt, SignedReceipt

_SCHEMA = """
CREATE TABLE IF NOT EXISTS receipts (
    request_id TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    pool TEXT NOT NULL,
    model TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    cost_nanoton TEXT NOT NULL,
    cumulative_nanoton TEXT NOT NULL,
    issued_at TEXT NOT NULL,
    attested_key TEXT NOT NULL,
    origin TEXT NOT NULL,
    received_at REAL NOT NULL,
    signed TEXT NOT NULL
)
"""


def default_path() -> Path:
    explicit = os.environ.get("COCOON_RECEIPTS")
    if explicit:
        return Path(explicit)
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "cocoon" / "receipts.db"


@dataclass(frozen=True)
class StoredReceipt:
    receipt: Receipt
    signed: SignedReceipt
    attested_key: str
    origin: str


@dataclass
class MeterSum:
    """One meter instance's charges to one channel, as the stored receipts show them."""

    receipts: int = 0
    cost_nanoton: int = 0
    charged_nanoton: int = 0  # the meter's latest cumulative total
    unaccounted_nanoton: int = 0  # charges in gaps between stored receipts


@dataclass
class Report:
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    channels: dict[str, dict[str, MeterSum]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def channel_cost(self, channel: str) -> int:
        return sum(m.cost_nanoton for m in self.channels.get(channel, {}).values())


class ReceiptStore:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def add(self, signed: SignedReceipt, attested_key: bytes, origin: str) -> None:
        """Keep a receipt already verified against `attested_key`; a request id seen before
        with other content is refused (a meter must never reissue an id)."""
        r = signed.receipt
        row = (r.request_id, r.channel, r.pool, r.model, r.endpoint, r.cost_nanoton,
               r.cumulative_nanoton, _iso(r.issued_at), attested_key.hex(), origin,
               time.time(), signed.model_dump_json(by_alias=True))
        with self._lock:
            try:
                self._db.execute("INSERT INTO receipts VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", row)
            except sqlite3.IntegrityError:
                (previous,) = self._db.execute(
                    "SELECT signed FROM receipts WHERE request_id = ?", (r.request_id,)
                ).fetchone()
                if SignedReceipt.model_validate_json(previous) != signed:
                    raise ReceiptRefused(
                        "RequestIdReused", f"request id {r.request_id} was already receipted "
                        "with different content") from None

    def list(self, channel: str | None = None) -> list[StoredReceipt]:
        query = "SELECT signed, attested_key, origin FROM receipts"
        args: tuple[str, ...] = ()
        if channel is not None:
            query += " WHERE channel = ?"
            args = (channel,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY received_at, rowid", args).fetchall()
        out = []
        for signed_json, key, origin in rows:
            signed = SignedReceipt.model_validate_json(signed_json)
            out.append(StoredReceipt(signed.receipt, signed, key, origin))
        return out

    def verify(self, channel: str | None = None) -> Report:
        return verify_receipts(self.list(channel))


def verify_receipts(stored: list[StoredReceipt]) -> Report:
    """Signatures against the attested keys, then the cumulative chain per channel and meter."""
    report = Report()
    chains: dict[tuple[str, str], list[Receipt]] = {}
    for item in stored:
        report.checked += 1
        try:
            receipt = receipts.verify(item.signed, bytes.fromhex(item.attested_key))
        except receipts.ReceiptError as exc:
            report.problems.append(f"{item.receipt.request_id}: {exc}")
            continue
        chains.setdefault((receipt.channel, receipt.meter_public_key), []).append(receipt)
    for (channel, meter), chain in sorted(chains.items()):
        total = MeterSum()
        previous = 0
        for receipt in sorted(chain, key=lambda r: int(r.cumulative_nanoton)):
            cost, cumulative = int(receipt.cost_nanoton), int(receipt.cumulative_nanoton)
            start = cumulative - cost
            if start < previous:
                report.problems.append(
                    f"{receipt.request_id}: charges {start}..{cumulative} overlap the previous "
                    f"receipt ending at {previous} (channel {channel}, meter {meter[:16]})")
            elif start > previous:
                total.unaccounted_nanoton += start - previous
            total.receipts += 1
            total.cost_nanoton += cost
            total.charged_nanoton = cumulative
            previous = cumulative
        report.channels.setdefault(channel, {})[meter] = total
    return report


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()
