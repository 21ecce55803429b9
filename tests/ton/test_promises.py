from __future__ import annotations

import dataclasses

import pytest

from cocoon import keys
from cocoon.ton import promises
from cocoon.ton.channel import Tag, new_channel_id
from cocoon.ton.tvm import Address

CHANNEL = Address("0:" + "33" * 32)


def test_sign_verify_and_json_round_trip() -> None:
    key = keys.generate()
    promise = promises.sign(key, CHANNEL, 7, 1_000)
    assert promises.verify(keys.public_bytes(key), promise)
    restored = promises.Promise.from_json(promise.to_json())
    assert restored == promise
    assert promises.verify(keys.public_bytes(key), restored)


@pytest.mark.parametrize(
    "change",
    [
        {"cumulative": 1_001},
        {"channel_id": 8},
        {"channel": Address("0:" + "44" * 32)},
        {"tag": Tag.COOP_CLOSE},
        {"signature": bytes(64)},
        {"signature": b"short"},
    ],
    ids=["amount", "channel-id", "address", "tag", "zero-signature", "short-signature"],
)
def test_any_change_breaks_the_signature(change: dict[str, object]) -> None:
    key = keys.generate()
    promise = promises.sign(key, CHANNEL, 7, 1_000)
    assert not promises.verify(keys.public_bytes(key), dataclasses.replace(promise, **change))  # type: ignore[arg-type]


def test_other_key_does_not_verify() -> None:
    promise = promises.sign(keys.generate(), CHANNEL, 7, 1_000)
    assert not promises.verify(keys.public_bytes(keys.generate()), promise)


def test_negative_amounts_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        promises.sign(keys.generate(), CHANNEL, 7, -1)


def test_channel_ids_are_random_128_bit() -> None:
    ids = {new_channel_id() for _ in range(64)}
    assert len(ids) == 64
    assert all(0 <= i < 1 << 128 for i in ids)
