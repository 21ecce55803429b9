"""ModelStreamInfer through the meter: every request on a stream is its own charge.

A client may keep one stream open for as long as it likes (perf_analyzer does), so charging the
stream as one call would journal, report and make claimable nothing until it closed. Instead
each request message begins its own call (its own request id, credit reservation and journal
row) when it arrives, and is settled, journaled, counted in the usage reports and receipted as
soon as its last response (`triton_final_response`, or an error) has gone by; before each
response is forwarded, its request's units so far are journaled (`Call.deliver`). Triton
echoes a request's `id` in its responses, which is how responses find their request; requests
sharing an id (or with none) take responses oldest first, so with interleaved answers the split
between them may shift but their sum is exact. Requests still open when the stream ends are
settled then, with the stream's outcome.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from cocoon.meter import receipts, wire
from cocoon.meter.core import Call, Meter, Settlement
from cocoon.meter.credits import ChannelCredit
from cocoon.meter.errors import MeterError, Reason
from cocoon.meter.pricing import Units

# A stream's trailers name at most this many requests and repeat at most this many receipts
# (the latest), to stay inside the 8 KiB of metadata a gRPC client accepts by default; every
# request is journaled and reported all the same.
TRAILER_REQUEST_IDS = 16
TRAILER_RECEIPTS = 3


@dataclass
class _Open:
    call: Call
    ident: str
    sent: hashlib._Hash = field(default_factory=hashlib.sha256)


class StreamCharges:
    """The calls of one ModelStreamInfer stream, open and settled."""

    def __init__(self, meter: Meter, credit: ChannelCredit) -> None:
        self.meter = meter
        self.credit = credit
        self.model = ""
        self._open: deque[_Open] = deque()
        self._settling: set[asyncio.Task[None]] = set()
        self.settled: list[Settlement] = []

    def add_request(self, message: bytes) -> None:
        """A request arrives: reserve its worst case (or raise) before it is forwarded."""
        model, ident = wire.request_names(message)
        self.model = self.model or model
        try:
            call = self.meter.begin(self.credit, model or self.model, "grpc", "stream_infer",
                                    streaming=True)
        except MeterError as exc:
            if exc.reason is Reason.NO_CREDIT:
                raise MeterError(
                    Reason.NO_CREDIT,
                    f"payment channel {self.credit.channel} has no credit left for another "
                    "request on this stream; top up the channel",
                ) from None
            raise
        call.request_sha256 = hashlib.sha256(message).hexdigest()
        self._open.append(_Open(call, ident))

    def _find(self, ident: str) -> _Open:
        for entry in self._open:
            if entry.ident == ident:
                return entry
        if self._open:
            return self._open[0]
        # A response no open request is waiting for: charge it as a call of its own.
        call = self.meter.begin(self.credit, self.model, "grpc", "stream_infer",
                                streaming=True, requests=0)
        entry = _Open(call, ident)
        self._open.append(entry)
        return entry

    async def forward(self, message: bytes, write: Callable[[bytes], Awaitable[None]]) -> None:
        """Count a response, journal its request's units, send it; settle the request if this
        was its last response. Raises NO_CREDIT (and sends nothing) beyond the channel's credit."""
        error, summary = wire.summarize_stream_response(message)
        entry = self._find(summary.id)
        call = entry.call
        trial = call.counter.copy()
        if error is not None:
            trial.failed = True
        elif summary.has_outputs:
            trial.add_response(summary.usage)
        if not call.affordable(trial):
            raise MeterError(
                Reason.NO_CREDIT,
                f"payment channel {self.credit.channel} ran out of credit mid-stream; you are "
                "charged for the responses sent; top up the channel",
            )
        call.upstream_seconds = time.perf_counter() - call.t0  # the meter's own time follows
        await call.deliver(trial)
        entry.sent.update(message)
        await write(message)
        if error is not None or summary.final:
            # settled beside the stream: its fsync does not hold up the other requests' answers
            self._open.remove(entry)
            task = asyncio.create_task(self._settle(entry, "error" if error else "ok"))
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)

    async def _settle(self, entry: _Open, outcome: str) -> None:
        call = entry.call
        try:
            call.response_sha256 = entry.sent.hexdigest()
            self.settled.append(await call.settle(outcome))
        finally:
            call.abandon()

    async def close(self, outcome: str) -> None:
        """Settle the requests still open when the stream ends, and wait for all settlements."""
        while self._open:
            await self._settle(self._open.popleft(), outcome)
        if self._settling:
            await asyncio.gather(*self._settling)

    def abandon(self) -> None:
        """Release what is still reserved (the stream was cancelled before settling)."""
        for entry in self._open:
            entry.call.abandon()

    def trailers(self) -> tuple[tuple[str, str], ...]:
        """The stream's total units and cost, the latest requests' ids and receipts."""
        units, cost = Units(), 0
        for settlement in self.settled:
            units += settlement.units
            cost += settlement.cost_nanoton
        out: list[tuple[str, str]] = [
            ("cocoon-units", units.header()), ("cocoon-cost-nanoton", str(cost)),
        ]
        out += [("cocoon-request-id", s.request_id)
                for s in self.settled[-TRAILER_REQUEST_IDS:]]
        out += [(receipts.GRPC_TRAILER, receipts.encode_header(s.receipt))
                for s in self.settled[-TRAILER_RECEIPTS:] if s.receipt is not None]
        return tuple(out)
