"""The hand-rolled protobuf scanner against messages built by the real generated classes."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb

from cocoon.meter import wire


@given(name=st.text(max_size=40), raw=st.binary(max_size=200), version=st.text(max_size=5))
@settings(max_examples=200, deadline=None)
def test_model_name_matches_protobuf(name, raw, version):
    request = pb.ModelInferRequest(model_version=version, id="x", raw_input_contents=[raw])
    request.model_name = name
    assert wire.model_name(request.SerializeToString()) == name


def _response(outputs, raw=()):
    response = pb.ModelInferResponse(model_name="tokens")
    for name, datatype in outputs:
        response.outputs.add(name=name, datatype=datatype, shape=[1])
    response.raw_output_contents.extend(raw)
    return response


@given(prompt=st.integers(0, 2**31 - 1), completion=st.integers(0, 2**31 - 1))
@settings(max_examples=100, deadline=None)
def test_usage_from_raw_output_contents(prompt, completion):
    response = _response(
        [("text_output", "BYTES"), ("prompt_tokens", "INT32"), ("completion_tokens", "INT64")],
        [b"\x03\x00\x00\x00abc", np.int32(prompt).tobytes(), np.int64(completion).tobytes()],
    )
    summary = wire.summarize_response(response.SerializeToString())
    assert summary.has_outputs
    assert summary.usage == {"prompt_tokens": prompt, "completion_tokens": completion}


def test_usage_from_typed_contents():
    response = pb.ModelInferResponse()
    out = response.outputs.add(name="completion_tokens", datatype="INT32", shape=[1])
    out.contents.int_contents.append(-5)
    out = response.outputs.add(name="prompt_tokens", datatype="UINT64", shape=[1])
    out.contents.uint64_contents.append(2**40)
    summary = wire.summarize_response(response.SerializeToString())
    assert summary.usage == {"completion_tokens": -5, "prompt_tokens": 2**40}


def test_stream_response_error_and_empty_final():
    message = pb.ModelStreamInferResponse(error_message="boom")
    assert wire.summarize_stream_response(message.SerializeToString())[0] == "boom"
    final = pb.ModelStreamInferResponse(infer_response=pb.ModelInferResponse(model_name="t"))
    final.infer_response.parameters["triton_final_response"].bool_param = True
    error, summary = wire.summarize_stream_response(final.SerializeToString())
    assert error is None
    assert not summary.has_outputs


@pytest.mark.parametrize("junk", [b"\x0a\x05ab", b"\x0a", b"\x0f", b"\xff" * 11])
def test_malformed_bytes_raise_wire_error(junk):
    with pytest.raises(wire.WireError):
        wire.model_name(junk)


def test_response_usage_skips_responses_without_usage_tensors():
    plain = pb.ModelInferResponse(model_name="add")
    plain.outputs.add(name="OUTPUT0", datatype="FP32", shape=[1])
    plain.raw_output_contents.append(b"\x00\x00\x80\x3f")
    assert wire.response_usage(plain.SerializeToString()) == {}
    usage = pb.ModelInferResponse(model_name="tokens")
    usage.outputs.add(name="completion_tokens", datatype="INT32", shape=[1])
    usage.raw_output_contents.append((7).to_bytes(4, "little"))
    assert wire.response_usage(usage.SerializeToString()) == {"completion_tokens": 7}


def test_stream_usage_found_inside_a_nested_view():
    usage = pb.ModelStreamInferResponse()
    usage.infer_response.outputs.add(name="prompt_tokens", datatype="INT32", shape=[1])
    usage.infer_response.raw_output_contents.append((3).to_bytes(4, "little"))
    error, summary = wire.summarize_stream_response(usage.SerializeToString())
    assert error is None and summary.has_outputs and summary.usage == {"prompt_tokens": 3}
    plain = pb.ModelStreamInferResponse()
    plain.infer_response.outputs.add(name="text_output", datatype="BYTES", shape=[1])
    error, summary = wire.summarize_stream_response(plain.SerializeToString())
    assert error is None and summary.has_outputs and summary.usage == {}


@given(name=st.text(max_size=20), ident=st.text(max_size=40))
@settings(max_examples=100, deadline=None)
def test_request_names_match_protobuf(name, ident):
    request = pb.ModelInferRequest(model_name=name, id=ident, model_version="1")
    assert wire.request_names(request.SerializeToString()) == (name, ident)


@pytest.mark.parametrize(("parameters", "final"), [
    ({"triton_final_response": True}, True),
    ({"triton_final_response": False}, False),
    ({}, False),  # no flag: the request settles when the stream ends
    ({"other": True, "triton_final_response": True}, True),
    ({"triton_final_response_x": True}, False),
])
@pytest.mark.parametrize("usage", [False, True])
def test_stream_response_names_its_request_and_whether_it_is_the_last(parameters, final, usage):
    response = _response([("text_output", "BYTES")] + ([("completion_tokens", "INT32")]
                                                       if usage else []),
                         [b"\x01\x00\x00\x00a"] + ([np.int32(7).tobytes()] if usage else []))
    response.id = "req-7"
    for key, value in parameters.items():
        response.parameters[key].bool_param = value
    message = pb.ModelStreamInferResponse(infer_response=response).SerializeToString()
    error, summary = wire.summarize_stream_response(message)
    assert error is None and summary.has_outputs
    assert (summary.id, summary.final) == ("req-7", final)
    assert summary.usage == ({"completion_tokens": 7} if usage else {})
