"""The credit gate: forward a call only when its channel can pay for the worst case.

All state lives on the event loop and no method awaits, so check-and-reserve is atomic and
concurrent calls can never together overdraw a channel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cocoon.meter.errors import MeterError, Reason


@dataclass(slots=True)
class Reservation:
    channel: str
    limit: int
    amount: int
    released: bool = False


class CreditGate:
    """Tracks reserved credit and calls in flight, per channel and for the pool.

    `spent` reads the channel's cumulative committed cost (from the journal); the remaining
    credit is limit - spent - reserved. A channel may hold at most `max_per_channel` of the
    pool's `max_in_flight` slots, so one tenant cannot take them all.
    """

    def __init__(
        self, spent: Callable[[str], int], max_in_flight: int, max_per_channel: int | None = None
    ) -> None:
        self._spent = spent
        self.max_in_flight = max_in_flight
        self.max_per_channel = max_per_channel or max_in_flight
        self.in_flight = 0
        self._reserved: dict[str, int] = {}
        self._calls: dict[str, int] = {}

    def remaining(self, channel: str, limit: int) -> int:
        return limit - self._spent(channel) - self._reserved.get(channel, 0)

    def reserve(self, channel: str, limit: int, amount: int) -> Reservation:
        if self.in_flight >= self.max_in_flight:
            raise MeterError(
                Reason.OVERLOADED,
                f"the pool is serving {self.in_flight} calls, its limit; retry with backoff",
            )
        calls = self._calls.get(channel, 0)
        if calls >= self.max_per_channel:
            raise MeterError(
                Reason.OVERLOADED,
                f"payment channel {channel} has {calls} calls in flight, its limit per channel; "
                "wait for some to finish, then retry with backoff",
            )
        left = self.remaining(channel, limit)
        if left < amount:
            raise MeterError(
                Reason.NO_CREDIT,
                f"payment channel {channel} has {max(left, 0)} nanoton of credit left and this "
                f"call needs a reservation of {amount}; top up the channel or wait for "
                "pending calls to settle",
            )
        self._reserved[channel] = self._reserved.get(channel, 0) + amount
        self._calls[channel] = calls + 1
        self.in_flight += 1
        return Reservation(channel, limit, amount)

    def extend(self, reservation: Reservation, total: int) -> bool:
        """Grow a reservation to `total` if the channel can cover it; False when it cannot."""
        extra = total - reservation.amount
        if extra <= 0:
            return True
        if self.remaining(reservation.channel, reservation.limit) < extra:
            return False
        self._reserved[reservation.channel] += extra
        reservation.amount = total
        return True

    def release(self, reservation: Reservation) -> None:
        """Drop the reservation; call after the settled cost is counted in `spent`."""
        if reservation.released:
            return
        reservation.released = True
        self.in_flight -= 1
        calls = self._calls[reservation.channel] - 1
        if calls:
            self._calls[reservation.channel] = calls
        else:
            del self._calls[reservation.channel]
        left = self._reserved[reservation.channel] - reservation.amount
        if left:
            self._reserved[reservation.channel] = left
        else:
            del self._reserved[reservation.channel]
