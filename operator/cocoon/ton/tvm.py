"""The typed boundary to pytoniq-core, whose methods carry no annotations: the rest of the
package goes through these few helpers and stays checkable under mypy --strict."""

from __future__ import annotations

from typing import cast

from pytoniq_core.boc.address import Address
from pytoniq_core.boc.builder import Builder
from pytoniq_core.boc.cell import Cell
from pytoniq_core.boc.slice import Slice

__all__ = [
    "Address",
    "Builder",
    "Cell",
    "Slice",
    "boc",
    "end",
    "from_boc",
    "parse",
    "raw",
    "slice_to_cell",
    "user_friendly",
]


def end(builder: Builder) -> Cell:
    return builder.end_cell()


def parse(cell: Cell) -> Slice:
    return cast(Slice, cell.begin_parse())  # type: ignore[no-untyped-call]


def boc(cell: Cell) -> bytes:
    return cast(bytes, cell.to_boc())  # type: ignore[no-untyped-call]


def from_boc(data: bytes) -> Cell:
    return Cell.one_from_boc(data)


def slice_to_cell(value: Slice) -> Cell:
    return cast(Cell, value.to_cell())  # type: ignore[no-untyped-call]


def raw(address: Address) -> str:
    """`0:<hex>`: the unambiguous form for APIs and files."""
    return cast(str, address.to_str(is_user_friendly=False))  # type: ignore[no-untyped-call]


def user_friendly(address: Address) -> str:
    """The bounceable base64url form wallets and explorers show."""
    return cast(str, address.to_str())  # type: ignore[no-untyped-call]
