"""Get-method stack values, normalised the same way for every chain adapter."""

from __future__ import annotations

from cocoon.ton.tvm import Address, Cell, parse

# ints, cells (slices are returned as the cell they cover), null, tuples
StackValue = int | Cell | None | list["StackValue"]


def read_int(value: StackValue) -> int:
    if not isinstance(value, int):
        raise TypeError(f"expected an int on the stack, got {type(value).__name__}")
    return value


def read_address(value: StackValue) -> Address:
    if not isinstance(value, Cell):
        raise TypeError(f"expected a slice with an address, got {type(value).__name__}")
    address = parse(value).load_address()
    if not isinstance(address, Address):
        raise TypeError("expected an internal address on the stack")
    return address
