"""ed25519 promises: the payer's signed statement of the cumulative amount owed to the payee.

Signatures are over the representation hash of `channel.signed_cell`, exactly what the contract
rebuilds and checks, so a promise verified here is one the contract accepts (deposit allowing).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from cocoon.ton.channel import Tag, signed_cell
from cocoon.ton.tvm import Address, raw

SIGNATURE_BYTES = 64


@dataclass(frozen=True)
class Promise:
    """A signed cumulative amount for one channel; persist it before handing it out."""

    channel: Address
    channel_id: int
    cumulative: int
    signature: bytes
    tag: Tag = Tag.PROMISE

    def message_hash(self) -> bytes:
        return signed_hash(self.tag, self.channel_id, self.channel, self.cumulative)

    def to_json(self) -> dict[str, str]:
        return {
            "channel": raw(self.channel),
            "channelId": str(self.channel_id),
            "cumulative": str(self.cumulative),
            "signature": self.signature.hex(),
            "tag": self.tag.name,
        }

    @classmethod
    def from_json(cls, data: dict[str, str]) -> Promise:
        return cls(
            channel=Address(data["channel"]),
            channel_id=int(data["channelId"]),
            cumulative=int(data["cumulative"]),
            signature=bytes.fromhex(data["signature"]),
            tag=Tag[data.get("tag", Tag.PROMISE.name)],
        )


def signed_hash(tag: Tag, channel_id: int, channel: Address, cumulative: int) -> bytes:
    return bytes(signed_cell(tag, channel_id, channel, cumulative).hash)


def sign(
    key: Ed25519PrivateKey,
    channel: Address,
    channel_id: int,
    cumulative: int,
    tag: Tag = Tag.PROMISE,
) -> Promise:
    if cumulative < 0:
        raise ValueError("a cumulative amount cannot be negative")
    signature = key.sign(signed_hash(tag, channel_id, channel, cumulative))
    return Promise(channel, channel_id, cumulative, signature, tag)


def verify(public_key: bytes, promise: Promise) -> bool:
    """True when `promise` carries a valid signature by `public_key` (32 raw bytes)."""
    if len(promise.signature) != SIGNATURE_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            promise.signature, promise.message_hash()
        )
    except InvalidSignature:
        return False
    return True
