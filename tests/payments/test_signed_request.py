"""The pure parts of the closed API: signed-request parsing and checks, the replay guard, token
buckets, and the informer's handling of watch events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from cocoon import keys, signed_request
from cocoon.controllers import views
from cocoon.controllers.api_guard import TokenBuckets
from cocoon.controllers.views import Informer
from cocoon.kube import INFERENCE_POOLS, Kind, Obj
from cocoon.signed_request import SignatureRefused

KEY = keys.generate()
PATH = "/usage/v1/credit/ns/pool"
NOW = 1_800_000_000.0


def _header(**changes: str) -> str:
    fields = dict(p.split("=", 1) for p in signed_request.sign(KEY, "GET", PATH, now=NOW)
                  .split(", "))
    return ", ".join(f"{k}={v}" for k, v in (fields | changes).items())


@pytest.mark.parametrize(("header", "reason"), [
    (None, "unsigned"),
    ("", "unsigned"),
    ("key=zz", "malformed_signature"),
    (_header(created="soon"), "malformed_signature"),
    (_header(nonce="00"), "malformed_signature"),
    (_header(signature="00" * 63), "malformed_signature"),
])
def test_malformed_headers_say_how_to_sign(header: str | None, reason: str) -> None:
    with pytest.raises(SignatureRefused) as refused:
        signed_request.parse(header)
    assert refused.value.reason == reason
    assert signed_request.HEADER in str(refused.value)


@pytest.mark.parametrize(("method", "target", "now", "reason"), [
    ("GET", PATH, NOW, None),
    ("GET", PATH, NOW + 30, None),
    ("GET", PATH, NOW - 30, None),
    ("GET", PATH, NOW + 31, "stale_signature"),
    ("GET", PATH, NOW - 31, "stale_signature"),
    ("POST", PATH, NOW, "bad_signature"),
    ("GET", "/usage/v1/credit/ns/other", NOW, "bad_signature"),
    ("GET", PATH + "?x=1", NOW, "bad_signature"),
])
def test_a_signature_binds_method_target_and_time(
    method: str, target: str, now: float, reason: str | None
) -> None:
    signed = signed_request.parse(_header())
    if reason is None:
        signed_request.verify(signed, method, target, now=now)
        return
    with pytest.raises(SignatureRefused) as refused:
        signed_request.verify(signed, method, target, now=now)
    assert refused.value.reason == reason


def test_the_replay_guard_forgets_after_the_window_and_is_bounded() -> None:
    guard = signed_request.ReplayGuard(max_entries=2)
    first, second, third = (signed_request.parse(signed_request.sign(KEY, "GET", PATH, now=NOW))
                            for _ in range(3))
    guard.admit(first, now=NOW)
    with pytest.raises(SignatureRefused, match="already used"):
        guard.admit(first, now=NOW + 59)
    guard.admit(second, now=NOW + 1)
    with pytest.raises(SignatureRefused) as full:
        guard.admit(third, now=NOW + 2)
    assert full.value.reason == "replay_cache_full"
    guard.admit(third, now=NOW + 2 * signed_request.WINDOW_SECONDS + 0.5)  # first expired


def test_token_buckets_refill_at_their_rate_per_key() -> None:
    buckets = TokenBuckets(rate=2, burst=2)
    assert [buckets.take("a", now=0) for _ in range(2)] == [0, 0]
    assert buckets.take("a", now=0) == pytest.approx(0.5)
    assert buckets.take("b", now=0) == 0  # another source is not affected
    assert buckets.take("a", now=0.5) == 0


class _Stream:
    """A Kube stand-in for one list and a scripted watch."""

    def __init__(self, events: list[Obj]) -> None:
        self.events = events
        self.lists = 0

    async def list_versioned(self, kind: Kind) -> tuple[list[Obj], str]:
        self.lists += 1
        return [_pool("a", "1")], "1"

    async def watch(self, kind: Kind, version: str) -> AsyncIterator[Obj]:
        for event in self.events:
            yield event


def _pool(name: str, version: str) -> Obj:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": version}}


async def test_the_informer_applies_events_and_relists_when_the_watch_expires() -> None:
    informer = Informer(INFERENCE_POOLS)
    stream: Any = _Stream([
        {"type": "ADDED", "object": _pool("b", "2")},
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "5"}}},
        {"type": "DELETED", "object": _pool("a", "6")},
    ])
    assert await informer._follow(stream, "1") == "6"
    assert informer.store.get("b", "ns") is not None and informer.store.get("a", "ns") is None
    stream.events = [{"type": "ERROR", "object": {"code": 410}}]
    with pytest.raises(views._Relist):
        await informer._follow(stream, "6")
