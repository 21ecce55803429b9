"""Level-based passes, one per concern, each on its own clock, with bounded per-object work.

One loop that called every controller in turn let a tenant stall the cluster: three
PaymentChannels whose chain endpoint never answered held attestation and verdict expiry for
minutes. Now attestation (challenges and expiry), pools, channels and TDX collateral renewal each
run as their own task,
every object's work has a deadline, and at most `concurrency` objects of a concern are worked on
at once, so a slow object costs its own deadline and one slot of its own concern, nothing more.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client import Counter, Histogram

log = logging.getLogger(__name__)
T = TypeVar("T")

# bounded labels: the concern is one of CONCERNS, the result one of RESULTS
OBJECTS = Counter(
    "cocoon_resync_objects_total",
    "Objects a level-based pass worked on, by concern and result (ok, failed, timeout).",
    ["concern", "result"],
)
PASS_SECONDS = Histogram(
    "cocoon_resync_pass_seconds",
    "How long one level-based pass of a concern took.",
    ["concern"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)


@dataclass(frozen=True)
class Schedule:
    """How one concern's pass runs: how often, how long one object may take, how many at once."""

    concern: str
    interval_s: float
    timeout_s: float
    concurrency: int


# concern -> (per-object deadline in seconds, objects worked on at once)
DEFAULTS: dict[str, tuple[float, int]] = {
    # a node's reconcile is a handful of API calls; a stuck one is retried next pass
    "attestation": (10.0, 16),
    # a pool applies two objects and reads its pods
    "pools": (30.0, 4),
    # a channel may deploy, top up and claim on chain, each waiting for its transaction
    "channels": (180.0, 8),
    # TDX collateral due for renewal, one platform type after another, from a PCCS
    "collateral": (60.0, 1),
    # one cheap read per chain endpoint: how fast ChainReachable tells the truth
    "chains": (5.0, 8),
}
CONCERNS = tuple(DEFAULTS)
# concerns on their own clock whatever COCOON_RESYNC_SECONDS says (a status bound depends on it)
OWN_INTERVAL = {"chains": 10.0}


def schedules(env: Mapping[str, str]) -> dict[str, Schedule]:
    """Each concern's schedule from the environment (the chart sets it), else the defaults.

    COCOON_RESYNC_SECONDS sets every interval but those in OWN_INTERVAL;
    COCOON_<CONCERN>_RESYNC_SECONDS, COCOON_<CONCERN>_TIMEOUT_SECONDS and
    COCOON_<CONCERN>_CONCURRENCY override one concern."""
    interval = float(env.get("COCOON_RESYNC_SECONDS", "30"))
    result = {}
    for concern, (timeout, concurrency) in DEFAULTS.items():
        prefix = f"COCOON_{concern.upper()}_"
        result[concern] = Schedule(
            concern=concern,
            interval_s=float(
                env.get(prefix + "RESYNC_SECONDS", OWN_INTERVAL.get(concern, interval))
            ),
            timeout_s=float(env.get(prefix + "TIMEOUT_SECONDS", timeout)),
            concurrency=max(1, int(env.get(prefix + "CONCURRENCY", concurrency))),
        )
        if result[concern].interval_s <= 0 or result[concern].timeout_s <= 0:
            raise ValueError(f"{prefix}*: intervals and timeouts must be positive seconds")
    return result


@dataclass
class PassResult:
    ok: int = 0
    failed: int = 0
    timed_out: int = 0


async def _guarded(
    work: Callable[[T], Awaitable[None]], item: T, schedule: Schedule, label: Callable[[T], str]
) -> str:
    """`work(item)` under the schedule's deadline; a failure or timeout is logged and counted,
    never raised. Returns the result label (ok, failed, timeout)."""
    try:
        async with asyncio.timeout(schedule.timeout_s):
            await work(item)
    except TimeoutError:
        log.warning(
            "%s %s took longer than %.0f s; retried next pass",
            schedule.concern,
            label(item),
            schedule.timeout_s,
        )
        result = "timeout"
    except Exception:
        log.exception("%s %s failed; retried next pass", schedule.concern, label(item))
        result = "failed"
    else:
        result = "ok"
    OBJECTS.labels(schedule.concern, result).inc()
    return result


async def each(
    items: Iterable[T],
    work: Callable[[T], Awaitable[None]],
    schedule: Schedule,
    label: Callable[[T], str],
) -> PassResult:
    """Run `work` on every item, at most `schedule.concurrency` at once, each under its deadline.

    A failure or a timeout is logged and counted and never stops the others; the object is
    simply worked on again in the next pass (every pass is level-based)."""
    pending = iter(items)
    result = PassResult()

    async def worker() -> None:
        for item in pending:  # one shared iterator: each item goes to exactly one worker
            outcome = await _guarded(work, item, schedule, label)
            if outcome == "timeout":
                result.timed_out += 1
            elif outcome == "failed":
                result.failed += 1
            else:
                result.ok += 1

    await asyncio.gather(*(worker() for _ in range(schedule.concurrency)))
    return result


class Dirty:
    """Names whose objects changed, worked on by `schedule.concurrency` workers: a name is
    queued once however often it changes before a worker takes it (a burst of watch events for
    one object costs one piece of work), and again if it changes while being worked on."""

    def __init__(self, work: Callable[[str], Awaitable[None]], schedule: Schedule) -> None:
        self.work = work
        self.schedule = schedule
        self._queued: set[str] = set()
        self._queue: asyncio.Queue[str] = asyncio.Queue()

    def add(self, name: str) -> None:
        if name not in self._queued:
            self._queued.add(name)
            self._queue.put_nowait(name)

    def __len__(self) -> int:
        return len(self._queued)

    async def _worker(self) -> None:
        while True:
            name = await self._queue.get()
            self._queued.discard(name)
            await _guarded(self.work, name, self.schedule, str)

    def start(self) -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(self._worker(), name=f"changes-{self.schedule.concern}")
            for _ in range(self.schedule.concurrency)
        ]


def object_label(obj: Mapping[str, Any]) -> str:
    """namespace/name (or name) of an object, for log lines."""
    meta = obj.get("metadata") or {}
    return "/".join(str(p) for p in (meta.get("namespace"), meta.get("name")) if p)


Pass = Callable[[Schedule], Awaitable[None]]


async def run_forever(schedule: Schedule, one_pass: Pass) -> None:
    """`one_pass` every `interval_s`, counted from the end of the previous pass."""
    while True:
        await asyncio.sleep(schedule.interval_s)
        with PASS_SECONDS.labels(schedule.concern).time():
            try:
                await one_pass(schedule)
            except Exception:
                log.exception(
                    "the %s pass failed; next pass in %.0f s", schedule.concern, schedule.interval_s
                )


def start(passes: Mapping[str, Pass], plans: Mapping[str, Schedule]) -> list[asyncio.Task[None]]:
    """One task per concern; a concern's pass never waits for another's."""
    return [
        asyncio.create_task(run_forever(plans[concern], one_pass), name=f"resync-{concern}")
        for concern, one_pass in passes.items()
    ]
