"""The meter in front of a real Triton, over gRPC (raw stubs, to see trailing metadata)."""

import grpc
import numpy as np
import pytest
from conftest import CREDENTIAL, POOR_CREDENTIAL, PRICE
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from cocoon.meter.journal import read_charges
from cocoon.meter.pricing import Units

pytestmark = pytest.mark.triton
AUTH = (("authorization", f"Bearer {CREDENTIAL}"),)


@pytest.fixture
def stub(meter):
    with grpc.insecure_channel(meter.grpc_target) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def _add_request():
    request = pb.ModelInferRequest(model_name="add")
    for name in ("INPUT0", "INPUT1"):
        request.inputs.add(name=name, datatype="FP32", shape=[16])
        request.raw_input_contents.append(np.ones(16, np.float32).tobytes())
    return request


def _tokens_request(text, max_tokens, **extra):
    request = pb.ModelInferRequest(model_name="tokens")
    request.inputs.add(name="text_input", datatype="BYTES", shape=[1])
    encoded = text.encode()
    request.raw_input_contents.append(len(encoded).to_bytes(4, "little") + encoded)
    for name, value in {"max_tokens": max_tokens, **extra}.items():
        request.inputs.add(name=name, datatype="INT32", shape=[1])
        request.raw_input_contents.append(np.int32(value).tobytes())
    return request


def test_model_infer_with_trailers(stub, meter):
    response, call = stub.ModelInfer.with_call(_add_request(), metadata=AUTH)
    assert np.frombuffer(response.raw_output_contents[0], np.float32).tolist() == [2.0] * 16
    trailers = dict(call.trailing_metadata())
    assert trailers["cocoon-cost-nanoton"] == "1000"
    assert Units.parse_header(trailers["cocoon-units"]) == Units(1, 0, 0)
    assert [c.request_id for c in read_charges(meter.journal)] == [trailers["cocoon-request-id"]]


def test_model_infer_rejections(stub):
    with pytest.raises(grpc.RpcError) as exc:
        stub.ModelInfer(_add_request())
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
    poor = (("authorization", f"Bearer {POOR_CREDENTIAL}"),)
    stub.ModelInfer(_add_request(), metadata=poor)
    with pytest.raises(grpc.RpcError) as exc:
        stub.ModelInfer(_add_request(), metadata=poor)
    assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert exc.value.details().startswith("InsufficientCredit:")
    with pytest.raises(grpc.RpcError) as exc:
        stub.ModelInfer(pb.ModelInferRequest(model_name="nope"), metadata=AUTH)
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND  # Triton's own error, passed through


def test_health_and_metadata_open_control_refused(stub):
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    assert stub.ServerReady(pb.ServerReadyRequest()).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name="add")).ready
    assert stub.ModelMetadata(pb.ModelMetadataRequest(name="add")).name == "add"
    assert stub.ServerMetadata(pb.ServerMetadataRequest()).name == "triton"
    with pytest.raises(grpc.RpcError) as exc:
        stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="add"),
                                   metadata=AUTH)
    assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_stream_infer_counts_tokens_and_usage(stub, meter):
    responses = stub.ModelStreamInfer(
        iter([_tokens_request("red green blue", 4), _tokens_request("x", 2)]), metadata=AUTH
    )
    messages = list(responses)
    assert all(not m.error_message for m in messages)
    assert len(messages) == 6
    trailing = responses.trailing_metadata()
    trailers = dict(trailing)
    expected = Units(2, 3 + 1, 4 + 2)
    assert Units.parse_header(trailers["cocoon-units"]) == expected
    assert trailers["cocoon-cost-nanoton"] == str(PRICE.cost(expected))
    charges = list(read_charges(meter.journal))  # one charge per request on the stream
    by_size = sorted((c.units for c in charges), key=lambda u: u.output_tokens)
    assert by_size == [Units(1, 1, 2), Units(1, 3, 4)]
    assert all((c.endpoint, c.model, c.outcome) == ("stream_infer", "tokens", "ok")
               for c in charges)
    ids = [v for k, v in trailing if k == "cocoon-request-id"]
    assert sorted(ids) == sorted(c.request_id for c in charges)


def test_stream_infer_error_mid_stream(stub, meter):
    responses = stub.ModelStreamInfer(
        iter([_tokens_request("a b", 5, fail_after=3)]), metadata=AUTH
    )
    messages = list(responses)
    assert "injected failure" in messages[-1].error_message
    trailers = dict(responses.trailing_metadata())
    assert Units.parse_header(trailers["cocoon-units"]) == Units(1, 0, 3)


def test_stream_beyond_credit_is_cut(stub):
    poor = (("authorization", f"Bearer {POOR_CREDENTIAL}"),)
    responses = stub.ModelStreamInfer(iter([_tokens_request("a", 40)]), metadata=poor)
    with pytest.raises(grpc.RpcError) as exc:
        list(responses)
    assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    units = Units.parse_header(dict(exc.value.trailing_metadata())["cocoon-units"])
    assert PRICE.cost(units) <= 3000
    assert units.output_tokens == 20
