"""No credential, no service: the meter has no anonymous channel, not even for benchmarks.

Benchmarks send real credentials (bench/bench_grpc.py, bench_tokens.py, bench_unary.py), so the
meter keeps no option that charges credential-less calls to a named channel.
"""

import argparse

import grpc
import pytest
from test_grpc_proxy import _add_request, _tokens_request
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from cocoon.meter import cli
from cocoon.meter.journal import read_charges


def test_the_meter_has_no_anonymous_channel_option():
    parser = argparse.ArgumentParser()
    cli.register(parser)
    valid = ["serve", "--pool=ns/p", "--journal=j.db", "--credits=c.json", "--plaintext"]
    assert parser.parse_args(valid).pool == "ns/p"
    with pytest.raises(SystemExit):
        parser.parse_args([*valid, "--anonymous-channel=ns/a"])


@pytest.mark.triton
def test_grpc_unary_and_stream_without_credential_are_refused_unwritten(meter):
    with grpc.insecure_channel(meter.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as exc:
            stub.ModelInfer(_add_request())
        assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as exc:
            list(stub.ModelStreamInfer(iter([_tokens_request("a b", 3)])))
        assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert list(read_charges(meter.journal)) == []
