"""Evidence appraisal off the event loop, in a small bounded thread pool.

Appraising a node (a quote, eight GPU reports, their certificate chains and RIMs) costs about
15 ms of CPU on an idle core and far more on a shared one. Run inline in the evidence route, a
burst of submissions held the event loop for the whole burst: the Lease went unrenewed past its
deadline, the leader stepped down, and every HTTP caller waited. In worker threads the loop
keeps turning: `bench/bench_offload.py` measured threads and processes equally fast here, each
keeping the loop's lag to tens of milliseconds, and only threads can take a Policy (its
cryptography certificates do not pickle). The queue is bounded: beyond it a caller is refused
at once (503, the agent backs off and retries) instead of waiting without end.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from prometheus_client import Counter, Gauge

P = ParamSpec("P")
T = TypeVar("T")

IN_FLIGHT = Gauge(
    "cocoon_appraisals_in_flight", "Appraisals running or queued in the appraisal pool."
)
REFUSED = Counter(
    "cocoon_appraisals_refused_total",
    "Submissions refused because the appraisal pool's queue was full.",
)


class Busy(Exception):
    """The pool's queue is full; the caller should retry after a short wait."""


class Appraiser:
    """Runs CPU-bound appraisal in `workers` threads with at most `queue` more waiting."""

    def __init__(self, workers: int = 2, queue: int = 64) -> None:
        if workers < 1 or queue < 0:
            raise ValueError("COCOON_APPRAISAL_WORKERS must be >= 1, the queue >= 0")
        self.workers = workers
        self.limit = workers + queue
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="appraisal")
        self._lock = threading.Lock()
        self._in_flight = 0

    @classmethod
    def from_env(cls) -> Appraiser:
        return cls(
            workers=int(os.environ.get("COCOON_APPRAISAL_WORKERS", "2")),
            queue=int(os.environ.get("COCOON_APPRAISAL_QUEUE", "64")),
        )

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def _release(self, _: Future[Any]) -> None:
        # runs when the work ends, not when its caller gives up: a cancelled request whose
        # appraisal is still running keeps its slot until the thread is free again
        with self._lock:
            self._in_flight -= 1
        IN_FLIGHT.dec()

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` in a worker thread; raises Busy when the queue is full."""
        with self._lock:
            if self._in_flight >= self.limit:
                REFUSED.inc()
                raise Busy(
                    f"the operator is appraising {self._in_flight} submissions; "
                    "retry in a few seconds"
                )
            self._in_flight += 1
        IN_FLIGHT.inc()
        future = self._pool.submit(fn, *args, **kwargs)
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
