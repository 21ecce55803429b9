"""The benchmark-only anonymous channel: off by default, charged in full when explicitly set."""

import dataclasses

import grpc
import numpy as np
import pytest
from conftest import CHANNEL, CREDENTIAL, PRICE
from test_grpc_proxy import _add_request, _tokens_request
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from cocoon.meter.core import Meter, MeterConfig
from cocoon.meter.credits import ChannelCredit, StaticCreditSource, credential_hash
from cocoon.meter.errors import MeterError, Reason
from cocoon.meter.journal import Journal, read_charges
from cocoon.meter.metrics import MeterMetrics
from cocoon.meter.pricing import Units
from cocoon.meter.process import start_meter, write_credits

CONFIG = MeterConfig(pool="ns/pool", price=PRICE)
TABLE = {credential_hash("c"): ChannelCredit("ns/a", 10**9)}


class _HashOnlySource:
    """A credit source that cannot look channels up by name (like the operator's)."""

    def lookup(self, credential_sha256: str) -> ChannelCredit | None:
        return TABLE.get(credential_sha256)

    async def run(self) -> None:
        raise NotImplementedError


def _meter(tmp_path, config, source=None):
    journal = Journal(tmp_path / "j.db")
    return Meter(config, source or StaticCreditSource(TABLE), journal, MeterMetrics(())), journal


async def test_off_by_default_no_credential_is_refused(tmp_path):
    meter, journal = _meter(tmp_path, CONFIG)
    with pytest.raises(MeterError) as exc:
        meter.begin(None, "m", "http", "infer")
    assert exc.value.reason is Reason.UNAUTHENTICATED
    journal.close()


async def test_anonymous_channel_charges_calls_without_credential(tmp_path):
    config = dataclasses.replace(CONFIG, anonymous_channel="ns/a")
    meter, journal = _meter(tmp_path, config)
    for header in (None, ""):
        call = meter.begin(header, "m", "http", "infer")
        assert call.credit == ChannelCredit("ns/a", 10**9)
        await call.settle("ok")
        call.abandon()
    assert journal.spent("ns/a") == 2 * PRICE.cost(Units(1, 0, 0))
    # a credential that is present but wrong is still refused: no silent fallback
    for header in ("Bearer wrong", "Basic c"):
        with pytest.raises(MeterError) as exc:
            meter.begin(header, "m", "http", "infer")
        assert exc.value.reason is Reason.UNAUTHENTICATED
    assert meter.begin("Bearer c", "m", "http", "infer").credit.channel == "ns/a"
    journal.close()


async def test_anonymous_channel_must_exist_and_source_must_support_it(tmp_path):
    meter, journal = _meter(tmp_path, dataclasses.replace(CONFIG, anonymous_channel="ns/gone"))
    with pytest.raises(MeterError) as exc:
        meter.begin(None, "m", "http", "infer")
    assert exc.value.reason is Reason.UNAUTHENTICATED
    assert "ns/gone" in exc.value.message
    journal.close()
    with pytest.raises(ValueError, match="anonymous"):
        _meter(tmp_path, dataclasses.replace(CONFIG, anonymous_channel="ns/a"),
               _HashOnlySource())


@pytest.mark.triton
def test_anonymous_meter_against_triton_grpc_and_stream(triton_server, tmp_path):
    write_credits(tmp_path / "credits.json", {CREDENTIAL: (CHANNEL, 10**15)})
    meter = start_meter(triton_server, tmp_path, price=PRICE,
                        extra_args=("--reserve-output-tokens=16", f"--anonymous-channel={CHANNEL}"))
    try:
        assert "ANONYMOUS CHANNEL ENABLED" in meter.log_text()
        with grpc.insecure_channel(meter.grpc_target) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            response, call = stub.ModelInfer.with_call(_add_request())  # no metadata at all
            assert np.frombuffer(response.raw_output_contents[0], np.float32)[0] == 2.0
            assert dict(call.trailing_metadata())["cocoon-cost-nanoton"] == "1000"
            stream = stub.ModelStreamInfer(iter([_tokens_request("a b", 3)]))
            assert len(list(stream)) == 3
            with pytest.raises(grpc.RpcError) as exc:
                stub.ModelInfer(_add_request(), metadata=(("authorization", "Bearer wrong"),))
            assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
        charges = list(read_charges(meter.journal))
        assert [(c.channel, c.endpoint, c.units) for c in charges] == [
            (CHANNEL, "infer", Units(1, 0, 0)), (CHANNEL, "stream_infer", Units(1, 2, 3)),
        ]
    finally:
        meter.stop()


@pytest.mark.triton
def test_meter_without_the_flag_refuses_anonymous_grpc(meter):
    with grpc.insecure_channel(meter.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as exc:
            stub.ModelInfer(_add_request())
        assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
