"""The metering life cycle of one call, shared by the HTTP and gRPC front ends.

begin (authenticate, reserve credit) → forward, counting units and growing the reservation
before anything beyond it is delivered, and (streams) journaling the units so far before each
chunk leaves → settle (journal durably, count, release).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import itertools
import logging
import os
import time
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cocoon import keys
from cocoon.meter import receipts
from cocoon.meter.credits import ChannelCredit, CreditSource, credential_hash
from cocoon.meter.errors import MeterError, Reason
from cocoon.meter.gate import CreditGate, Reservation
from cocoon.meter.journal import Charge, Journal
from cocoon.meter.limits import ChannelSlots, Limits
from cocoon.meter.metrics import MeterMetrics
from cocoon.meter.pricing import Price, Units
from cocoon.meter.usage import UsageCounter

log = logging.getLogger(__name__)

_BEARER = "bearer "


@dataclass(frozen=True)
class MeterConfig:
    """How one pool's meter charges. Reservations cover the worst case of one request."""

    pool: str
    price: Price = field(default_factory=Price)
    models: tuple[str, ...] = ()
    reserve_input_tokens: int = 0
    reserve_output_tokens: int = 256
    max_in_flight: int = 256
    # Body sizes, read timeouts and the per-channel bound: cocoon.meter.limits.
    limits: Limits = field(default_factory=Limits)
    # `full` (fsync before answering) or `batch:<ms>`: see cocoon.meter.journal.
    journal_sync: str = "full"
    # The pool's tokenizer.json: counts prompts for the OpenAI routes (cocoon.meter.prompt_tokens).
    tokenizer: str | None = None

    @property
    def reservation(self) -> int:
        return self.price.cost(
            Units(1, self.reserve_input_tokens, self.reserve_output_tokens)
        )


EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True)
class ReceiptSigner:
    """The meter instance's in-memory receipt key and what every receipt repeats."""

    key: Ed25519PrivateKey
    pool: str
    price: dict[str, str]

    @property
    def public_hex(self) -> str:
        return keys.public_bytes(self.key).hex()


@dataclass(frozen=True, slots=True)
class Settlement:
    request_id: str
    units: Units
    cost_nanoton: int
    receipt: receipts.SignedReceipt | None = None

    def headers(self) -> dict[str, str]:
        headers = {
            "Cocoon-Request-Id": self.request_id,
            "Cocoon-Units": self.units.header(),
            "Cocoon-Cost-Nanoton": str(self.cost_nanoton),
        }
        if self.receipt is not None:
            headers[receipts.HEADER] = receipts.encode_header(self.receipt)
        return headers


class Call:
    """One metered call: its reservation, its usage so far, and the time spent upstream."""

    __slots__ = (
        "_journaled", "_meter", "counter", "credit", "endpoint", "model", "protocol",
        "request_id",
        "request_sha256", "reservation", "response_sha256", "settled", "started", "submitted",
        "t0", "upstream_seconds",
    )

    def __init__(
        self, meter: Meter, credit: ChannelCredit, *, model: str, protocol: str,
        endpoint: str, reservation: Reservation, counter: UsageCounter,
    ) -> None:
        self._meter = meter
        self.credit = credit
        self.model = model
        self.protocol = protocol
        self.endpoint = endpoint
        self.reservation = reservation
        self.counter = counter
        self.request_id = meter.next_request_id()
        self.started = time.time()
        self.t0 = time.perf_counter()
        self.upstream_seconds = 0.0
        self.settled: Settlement | None = None
        self.submitted = False
        self._journaled = Units()
        # what the receipt hashes: the proxies set them before settling
        self.request_sha256 = EMPTY_SHA256
        self.response_sha256 = EMPTY_SHA256

    def affordable(self, counter: UsageCounter) -> bool:
        """Grow the reservation to cover `counter`'s units, or say the channel cannot pay."""
        cost = self._meter.cost(counter.units())
        if cost <= self.reservation.amount:
            return True
        gate = self._meter.gate
        # Grow by a whole reservation to make this rare; near the limit, by just what is needed.
        return gate.extend(self.reservation, cost + self._meter.reservation) or gate.extend(
            self.reservation, cost
        )

    async def deliver(self, counter: UsageCounter, counted_prompt: int = 0) -> None:
        """Before a stream forwards a chunk: adopt `counter` (already `affordable`) and have its
        units written to the journal, so that a killed meter keeps the charge of every token it
        delivered. Chunks that add no units write nothing. `counted_prompt`: the prompt as the
        meter counted it, charged (as at the end) while the model has reported none."""
        self.counter = counter
        units = counter.units()
        if counted_prompt and units.requests and not units.input_tokens:
            units = dataclasses.replace(units, input_tokens=counted_prompt)
        if units == self._journaled or self.settled is not None:
            return
        self._journaled = units
        await self._meter.journal.progress(self._charge("streaming", units))

    def _charge(self, outcome: str, units: Units) -> Charge:
        return Charge(
            self.request_id, self.credit.channel, self.model, self.endpoint, outcome, units,
            self._meter.cost(units), self.started, time.time(),
        )

    def abandon(self) -> None:
        """Release the reservation of a call that ends without a charge reaching the journal.

        Once a charge is submitted, the journal releases the reservation after counting the
        charge, so that the channel's credit is never briefly overstated.
        """
        if not self.submitted:
            self._meter.release(self.reservation)

    async def settle(self, outcome: str) -> Settlement:
        """Journal the charge durably, then count it and release the reservation."""
        if self.settled is not None:
            return self.settled
        meter = self._meter
        units = self.counter.units()
        charge = self._charge(outcome, units)
        cost = charge.cost_nanoton
        commit_start = time.perf_counter()
        self.submitted = True
        future = meter.journal.submit(charge)
        future.add_done_callback(lambda _: meter.release(self.reservation))
        seq = await asyncio.shield(future)
        meter.metrics.journal_commit.observe(time.perf_counter() - commit_start)
        meter.metrics.charged(self.model, self.protocol, outcome, units, cost)
        cumulative = meter.journal.cumulative_at(seq, self.credit.channel)
        self.settled = Settlement(
            self.request_id, units, cost, self._receipt(outcome, units, cost, cumulative)
        )
        added = time.perf_counter() - self.t0 - self.upstream_seconds
        meter.metrics.observe_added(self.protocol, added)
        if log.isEnabledFor(logging.DEBUG):
            self._log_settled(outcome, units, cost)
        return self.settled

    def _receipt(
        self, outcome: str, units: Units, cost: int, cumulative: int
    ) -> receipts.SignedReceipt | None:
        signer = self._meter.signer
        if signer is None:
            return None
        channel = self.credit.channel
        return receipts.issue(
            signer.key, signer.public_hex, request_id=self.request_id, pool=signer.pool,
            channel=channel, model=self.model, endpoint=self.endpoint, outcome=outcome,
            request_sha256=self.request_sha256, response_sha256=self.response_sha256,
            units=units.as_dict(), price=signer.price, cost_nanoton=cost,
            cumulative_nanoton=cumulative,
        )

    def _log_settled(self, outcome: str, units: Units, cost: int) -> None:
        log.debug(
            "call settled",
            extra={
                "requestId": self.request_id, "channel": self.credit.channel,
                "model": self._meter.metrics.model_label(self.model),
                "endpoint": self.endpoint, "outcome": outcome, **units.as_dict(),
                "costNanoton": cost,
            },
        )


class Meter:
    def __init__(
        self, config: MeterConfig, credits: CreditSource, journal: Journal, metrics: MeterMetrics,
        receipt_key: Ed25519PrivateKey | None = None,
    ) -> None:
        self.config = config
        self.signer = (
            ReceiptSigner(receipt_key, config.pool, {
                name: str(value) for name, value in config.price.model_dump().items()
                if value is not None
            })
            if receipt_key is not None
            else None
        )
        self.credits = credits
        self.journal = journal
        self.metrics = metrics
        per_channel = config.limits.per_channel(config.max_in_flight)
        self.gate = CreditGate(journal.spent, config.max_in_flight, per_channel)
        # Bodies being read hold no pool slot, only their channel's reading allowance.
        self.reading = ChannelSlots(per_channel)
        self.tariff = config.price.tariff()
        self.reservation = config.reservation
        # Request ids: a keyed hash (random per-process key) of a counter: as unique and
        # unguessable as uuid4 without a urandom call per request, and unlike a bare counter
        # they do not tell a tenant how many calls other tenants made in between.
        self._id_key = os.urandom(32)
        self._id_counter = itertools.count(1)

    def cost(self, units: Units) -> int:
        """`config.price.cost(units)` with the prices parsed once."""
        return self.tariff.cost(units)

    def next_request_id(self) -> str:
        return hashlib.blake2b(
            next(self._id_counter).to_bytes(8, "little"), key=self._id_key, digest_size=16
        ).hexdigest()

    def authenticate(self, authorization: str | None) -> ChannelCredit:
        if not authorization or authorization[:7].lower() != _BEARER:
            self.metrics.rejections.labels(Reason.UNAUTHENTICATED.value).inc()
            raise MeterError(
                Reason.UNAUTHENTICATED,
                "no credential: send 'Authorization: Bearer <credential>' with the credential "
                "from your PaymentChannel's Secret",
            )
        token = authorization[7:].strip()
        if not (token.isascii() and token.isprintable()):
            self.metrics.rejections.labels(Reason.UNAUTHENTICATED.value).inc()
            raise MeterError(
                Reason.UNAUTHENTICATED,
                "malformed credential: it must be printable ASCII; send the credential from "
                "your PaymentChannel's Secret exactly as stored",
            )
        credit = self.credits.lookup(credential_hash(token))
        if credit is None:
            self.metrics.rejections.labels(Reason.UNAUTHENTICATED.value).inc()
            raise MeterError(
                Reason.UNAUTHENTICATED,
                "unknown credential: use the current credential from your PaymentChannel's "
                "Secret (it changes when the channel is recreated)",
            )
        if credit.refusal:
            self.metrics.rejections.labels(Reason.PRICE_ABOVE_MAX.value).inc()
            raise MeterError(Reason.PRICE_ABOVE_MAX, credit.refusal)
        return credit

    def begin(
        self, authorization: str | ChannelCredit | None, model: str, protocol: str,
        endpoint: str, *, streaming: bool = False, requests: int = 1, reserve: int | None = None,
    ) -> Call:
        """Reserve `reserve` nanoton (default: the configured worst case) and a slot;
        `authorization` may be a credit already authenticated."""
        credit = (
            authorization if isinstance(authorization, ChannelCredit)
            else self.authenticate(authorization)
        )
        amount = self.reservation * requests if reserve is None else reserve
        try:
            reservation = self.gate.reserve(credit.channel, credit.limit_nanoton, amount)
        except MeterError as exc:
            self.metrics.rejections.labels(exc.reason.value).inc()
            raise
        self.metrics.in_flight.inc()
        counter = UsageCounter(streaming=streaming, requests=requests)
        return Call(
            self, credit, model=model, protocol=protocol, endpoint=endpoint,
            reservation=reservation, counter=counter,
        )

    def release(self, reservation: Reservation) -> None:
        if not reservation.released:
            self.metrics.in_flight.dec()
        self.gate.release(reservation)
