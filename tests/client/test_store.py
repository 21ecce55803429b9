"""The receipt store's sums, table-driven: contiguous, gaps, overlaps, foreign keys."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from cocoon.client.errors import ReceiptRefused
from cocoon.client.store import ReceiptStore, StoredReceipt, default_path, verify_receipts
from cocoon.meter import receipts
from cocoon.meter.identity import MeterIdentity

METER = MeterIdentity.generate()
OTHER = MeterIdentity.generate()


def _stored(n: int, cost: int, cumulative: int, key: MeterIdentity = METER,
            attested: MeterIdentity = METER) -> StoredReceipt:
    receipt = receipts.Receipt(
        format=receipts.FORMAT,
        request_id=f"{n:032x}", meter_public_key=key.receipt_public_hex, pool="t/p",
        channel="t/alpha", model="m", endpoint="generate", outcome="ok",
        request_sha256="0" * 64, response_sha256="0" * 64, units={"requests": 1},
        price={"per_request": str(cost)}, cost_nanoton=str(cost),
        cumulative_nanoton=str(cumulative), issued_at=int(datetime.now(UTC).timestamp()),
    )
    signed = receipts.sign(receipt, key.receipt_key)
    return StoredReceipt(receipt, signed, attested.receipt_public_hex, "o")


@pytest.mark.parametrize(
    ("chain", "problems", "cost", "unaccounted"),
    [
        ([(1, 10, 10), (2, 5, 15)], 0, 15, 0),
        ([(2, 5, 15), (1, 10, 10)], 0, 15, 0),  # order of arrival does not matter
        ([(1, 10, 10), (2, 5, 25)], 0, 15, 10),  # 10 charged by receipts this store lacks
        ([(1, 10, 10), (2, 5, 12)], 1, 15, 0),  # overlaps: charged twice for 3
        ([(1, 10, 5)], 1, 10, 0),  # cumulative below its own cost
    ],
)
def test_sums(chain: list[tuple[int, int, int]], problems: int, cost: int,
              unaccounted: int) -> None:
    report = verify_receipts([_stored(*c) for c in chain])
    assert len(report.problems) == problems, report.problems
    (total,) = report.channels["t/alpha"].values()
    assert total.cost_nanoton == cost
    assert total.unaccounted_nanoton == unaccounted


def test_receipt_signed_by_another_key_than_the_attested_one() -> None:
    report = verify_receipts([_stored(1, 10, 10, key=OTHER, attested=METER)])
    assert not report.ok
    assert "other than" in report.problems[0]


def test_reused_request_id_with_other_content_is_refused(tmp_path: Path) -> None:
    store = ReceiptStore(tmp_path / "r.db")
    first = _stored(1, 10, 10)
    store.add(first.signed, METER.keys.receipt_public_key, "o")
    store.add(first.signed, METER.keys.receipt_public_key, "o")  # the same again: fine
    with pytest.raises(ReceiptRefused, match="already receipted"):
        store.add(_stored(1, 11, 11).signed, METER.keys.receipt_public_key, "o")
    assert len(store.list()) == 1
    store.close()


def test_default_path_follows_xdg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COCOON_RECEIPTS", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", "/x")
    assert str(default_path()) == "/x/cocoon/receipts.db"
