"""Python builds byte-identical cells and signatures to the JS side (vectors written by
contracts/test/golden.test.mjs, which also runs them on the real contract)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cocoon.ton import channel, promises
from cocoon.ton.tvm import Address, raw

GOLDEN_PATH = Path(__file__).parents[1] / "data" / "ton" / "golden_vectors.json"
GOLDEN = json.loads(GOLDEN_PATH.read_text())
QUERY_ID = int(GOLDEN["queryId"])


@pytest.fixture
def config() -> channel.ChannelConfig:
    return channel.ChannelConfig(
        payer_key=bytes.fromhex(GOLDEN["publicKeyHex"]),
        channel_id=int(GOLDEN["channelId"]),
        close_delay=GOLDEN["closeDelay"],
        payer=Address(GOLDEN["payer"]),
        payee=Address(GOLDEN["payee"]),
    )


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(GOLDEN["seedHex"]))


def test_code_data_and_address(config: channel.ChannelConfig) -> None:
    assert channel.compiled().code.hash.hex() == GOLDEN["codeHashHex"]
    assert config.data().hash.hex() == GOLDEN["dataHashHex"]
    assert config.state_init().serialize().hash.hex() == GOLDEN["stateInitHashHex"]
    assert raw(config.address()) == GOLDEN["address"]


@pytest.mark.parametrize("vector", GOLDEN["promises"], ids=lambda v: v["cumulative"])
def test_promises(
    config: channel.ChannelConfig, key: Ed25519PrivateKey, vector: dict[str, str]
) -> None:
    cumulative = int(vector["cumulative"])
    promise = promises.sign(key, config.address(), config.channel_id, cumulative)
    assert promise.message_hash().hex() == vector["cellHashHex"]
    assert promise.signature.hex() == vector["signatureHex"]
    body = channel.claim_body(cumulative, promise.signature, QUERY_ID)
    assert body.hash.hex() == vector["claimBodyHashHex"]


def test_close_and_cooperative_close(config: channel.ChannelConfig, key: Ed25519PrivateKey) -> None:
    address, channel_id = config.address(), config.channel_id
    close = promises.sign(key, address, channel_id, 0, channel.Tag.CLOSE)
    assert close.message_hash().hex() == GOLDEN["close"]["cellHashHex"]
    assert close.signature.hex() == GOLDEN["close"]["signatureHex"]
    body = channel.close_body(close.signature, QUERY_ID)
    assert body.hash.hex() == GOLDEN["close"]["bodyHashHex"]

    coop = GOLDEN["coopClose"]
    final = promises.sign(key, address, channel_id, int(coop["cumulative"]), channel.Tag.COOP_CLOSE)
    assert final.message_hash().hex() == coop["cellHashHex"]
    assert final.signature.hex() == coop["signatureHex"]
    body = channel.coop_close_body(final.cumulative, final.signature, QUERY_ID)
    assert body.hash.hex() == coop["bodyHashHex"]


def test_plain_bodies() -> None:
    assert channel.top_up_body(QUERY_ID).hash.hex() == GOLDEN["topUpBodyHashHex"]
    assert channel.withdraw_body(QUERY_ID).hash.hex() == GOLDEN["withdrawBodyHashHex"]


def test_packaged_code_is_the_committed_build() -> None:
    build = Path(__file__).parents[2] / "contracts" / "build" / "payment_channel.compiled.json"
    packaged = Path(channel.__file__).with_name("payment_channel.compiled.json")
    assert packaged.read_bytes() == build.read_bytes()
