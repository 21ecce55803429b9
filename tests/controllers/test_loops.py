"""Per-concern passes: a stuck object costs its own deadline and one slot, never the pass."""

from __future__ import annotations

import asyncio

import pytest

from cocoon.controllers import loops

FAST = loops.Schedule("channels", interval_s=1, timeout_s=0.2, concurrency=2)


@pytest.mark.parametrize(
    ("env", "concern", "expected"),
    [
        ({}, "attestation", loops.Schedule("attestation", 30, 10, 16)),
        ({}, "channels", loops.Schedule("channels", 30, 180, 8)),
        ({"COCOON_RESYNC_SECONDS": "2"}, "pools", loops.Schedule("pools", 2, 30, 4)),
        (
            {"COCOON_RESYNC_SECONDS": "2", "COCOON_CHANNELS_TIMEOUT_SECONDS": "5"},
            "channels",
            loops.Schedule("channels", 2, 5, 8),
        ),
        (
            {"COCOON_ATTESTATION_CONCURRENCY": "0"},
            "attestation",
            loops.Schedule("attestation", 30, 10, 1),
        ),
        ({"COCOON_POOLS_RESYNC_SECONDS": "7"}, "pools", loops.Schedule("pools", 7, 30, 4)),
        # the reachability bound (interval + timeout) does not follow the general resync
        ({"COCOON_RESYNC_SECONDS": "600"}, "chains", loops.Schedule("chains", 10, 5, 8)),
        ({"COCOON_CHAINS_RESYNC_SECONDS": "3"}, "chains", loops.Schedule("chains", 3, 5, 8)),
    ],
)
def test_schedules(env: dict[str, str], concern: str, expected: loops.Schedule) -> None:
    assert loops.schedules(env)[concern] == expected


@pytest.mark.parametrize(
    "env", [{"COCOON_RESYNC_SECONDS": "0"}, {"COCOON_POOLS_TIMEOUT_SECONDS": "-1"}]
)
def test_schedules_refuse_non_positive(env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="positive"):
        loops.schedules(env)


async def test_a_stuck_object_times_out_and_the_others_finish() -> None:
    done: list[str] = []

    async def work(name: str) -> None:
        if name.startswith("black-hole"):
            await asyncio.Event().wait()  # never answers
        if name == "broken":
            raise RuntimeError("boom")
        done.append(name)

    names = ["black-hole-1", "black-hole-2", "black-hole-3", "broken", "a", "b", "c"]
    result = await asyncio.wait_for(loops.each(names, work, FAST, str), timeout=5)
    assert sorted(done) == ["a", "b", "c"]
    assert (result.ok, result.failed, result.timed_out) == (3, 1, 3)


async def test_concurrency_is_bounded() -> None:
    running = 0
    peak = 0

    async def work(_: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1

    result = await loops.each(range(20), work, FAST, str)
    assert result.ok == 20
    assert peak == FAST.concurrency


async def test_each_concern_runs_on_its_own_task() -> None:
    """The channels pass hangs forever; the attestation pass keeps its clock."""
    passes = {"attestation": 0}
    five = asyncio.Event()

    async def attestation(_: loops.Schedule) -> None:
        passes["attestation"] += 1
        if passes["attestation"] >= 5:
            five.set()

    async def channels(_: loops.Schedule) -> None:
        await asyncio.Event().wait()

    plans = {
        "attestation": loops.Schedule("attestation", 0.01, 1, 1),
        "channels": loops.Schedule("channels", 0.01, 1, 1),
    }
    tasks = loops.start({"attestation": attestation, "channels": channels}, plans)
    try:
        await asyncio.wait_for(five.wait(), timeout=5)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
