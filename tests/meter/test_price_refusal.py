"""A channel whose maxPrice is below this meter's price is never served or charged here.

The operator's credit document marks such a channel with a refusal; the real meter in front of
real Triton answers its callers 409 with that text and journals nothing."""

import json

import aiohttp
import pytest
from conftest import AUTH, CHANNEL, CREDENTIAL, PRICE

from cocoon.meter.credits import credential_hash
from cocoon.meter.journal import read_charges
from cocoon.meter.process import start_meter

pytestmark = pytest.mark.triton
REFUSAL = "the pool's price exceeds your PaymentChannel's maxPrice (completion); nothing charged"


async def test_a_refused_channel_gets_409_and_no_charge(triton_server, tmp_path):
    (tmp_path / "credits.json").write_text(json.dumps({"channels": [{
        "channel": CHANNEL, "credentialSha256": credential_hash(CREDENTIAL),
        "creditLimitNanoton": "1000000000000", "refusal": REFUSAL,
    }]}))
    meter = start_meter(triton_server, tmp_path, price=PRICE)
    try:
        body = {"inputs": [
            {"name": n, "shape": [16], "datatype": "FP32", "data": [1.0] * 16}
            for n in ("INPUT0", "INPUT1")
        ]}
        async with aiohttp.ClientSession() as s, s.post(
            f"{meter.http_url}/v2/models/add/infer", json=body, headers=AUTH
        ) as r:
            status, answer = r.status, await r.json()
        assert status == 409
        assert (answer["code"], answer["message"]) == ("PriceAboveMaxPrice", REFUSAL)
        assert list(read_charges(meter.journal)) == []
    finally:
        meter.stop()
