"""Admission limits as pure functions: the gate's per-channel bound, JSON checks, spec → flags."""

import json
import logging

import pytest

from cocoon import logs
from cocoon.api.inferencepool import MeterLimits
from cocoon.cli import build_parser
from cocoon.meter.errors import MeterError, Reason, upstream_error
from cocoon.meter.gate import CreditGate
from cocoon.meter.limits import ChannelSlots, Limits
from cocoon.meter.pricing import Price
from cocoon.meter.sidecar import sidecar_spec
from cocoon.meter.validate import check_json


def test_gate_bounds_each_channel_below_the_pool():
    gate = CreditGate(lambda _: 0, max_in_flight=4, max_per_channel=2)
    held = [gate.reserve("ns/a", 100, 1), gate.reserve("ns/a", 100, 1)]
    with pytest.raises(MeterError) as refused:
        gate.reserve("ns/a", 100, 1)
    assert refused.value.reason is Reason.OVERLOADED
    assert "ns/a has 2 calls in flight" in refused.value.message
    other = [gate.reserve("ns/b", 100, 1), gate.reserve("ns/b", 100, 1)]
    with pytest.raises(MeterError, match="pool is serving 4 calls"):
        gate.reserve("ns/c", 100, 1)
    gate.release(held[0])
    assert gate.reserve("ns/a", 100, 1).channel == "ns/a"
    for r in (held[1], *other):
        gate.release(r)
    assert gate.in_flight == 1


def test_channel_slots_release_on_error():
    slots = ChannelSlots(1)
    with pytest.raises(RuntimeError), slots.hold("ns/a"):
        raise RuntimeError
    assert slots.held("ns/a") == 0
    with slots.hold("ns/a"), pytest.raises(MeterError, match="1 calls in progress"):
        slots.hold("ns/a").__enter__()


def test_per_channel_default_is_a_quarter_of_the_pool():
    assert Limits().per_channel(256) == 64
    assert Limits().per_channel(2) == 1
    assert Limits(max_in_flight_per_channel=5).per_channel(256) == 5


@pytest.mark.parametrize(("endpoint", "body", "headers", "why"), [
    ("generate", b"{", {}, "not valid JSON"),
    ("generate", b"[1, 2]", {}, "must be a JSON object"),
    ("generate", b'"text"', {}, "must be a JSON object"),
    ("generate", b'{"text_input": "\xff"}', {}, "not valid UTF-8"),
    ("generate", b"[" * 100000, {}, "not valid JSON"),
    ("infer", b"{}", {"Inference-Header-Content-Length": "5"}, "no larger than the body"),
    ("infer", b"{}", {"Inference-Header-Content-Length": "-1"}, "whole number"),
    ("infer", b"{}xx", {"Inference-Header-Content-Length": "3"}, "not valid JSON"),
    ("infer", b"{}", {"Inference-Header-Content-Length": "\u00b2"}, "whole number"),
    ("infer", b"{}", {}, "needs `inputs`"),
    ("infer", b'{"inputs": [1]}', {}, "must be a JSON object"),
    ("infer", b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [-1]}]}', {},
     "non-negative"),
    ("infer", b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [true]}]}', {},
     "non-negative"),
    ("infer", b'{"inputs": [{"name": 1}]}', {}, "string `name`"),
    ("infer", b'{"inputs": [{"name": "a", "shape": [1]}]}', {}, "string `datatype`"),
    ("generate", b'{"parameters": 1}', {}, "`parameters` must be"),
])
def test_malformed_json_is_refused_with_a_reason(endpoint, body, headers, why):
    with pytest.raises(MeterError) as refused:
        check_json(body, headers, endpoint)
    assert refused.value.reason is Reason.BAD_REQUEST
    assert why in refused.value.message


@pytest.mark.parametrize(("endpoint", "body", "headers"), [
    ("generate", b'{"text_input": "a"}', {}),
    ("infer", b'{"inputs": [{"name": "a", "shape": [], "datatype": "BYTES"}]}\x00\x01',
     {"Inference-Header-Content-Length": "61"}),
    ("infer", b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}]}', {}),
])
def test_well_formed_bodies_pass(endpoint, body, headers):
    check_json(body, headers, endpoint)


def test_triton_errors_map_to_documented_codes():
    status, body = upstream_error(500, b'{"error": "model crashed"}')
    assert status == 502
    assert json.loads(body)["code"] == "ModelError"
    assert "model crashed" in json.loads(body)["error"]
    status, body = upstream_error(400, b'{"error": "unexpected input"}')
    assert (status, json.loads(body)) == (400, {
        "error": "unexpected input", "code": "ModelRejected", "message": "unexpected input",
    })
    status, body = upstream_error(500, b'{"error": "Unable to parse \'inputs\'"}')
    assert (status, json.loads(body)["code"]) == (400, "ModelRejected")
    status, body = upstream_error(503, b"<html>garbage")
    assert status == 502
    assert "without a reason" in json.loads(body)["message"]


def test_pool_spec_limits_reach_the_meter_flags():
    spec = MeterLimits.model_validate({
        "maxBodyBytes": {"infer": 2048, "generate": 4096, "generateStream": 8192},
        "maxInFlightPerChannel": 3, "headerTimeoutSeconds": 7, "bodyTimeoutSeconds": 9,
    })
    container = sidecar_spec(image="m", pool="ns/p", price=Price(), models=["m"],
                             limits=spec.meter_limits())
    args = build_parser().parse_args(container["args"])
    assert (args.max_body_infer, args.max_body_generate, args.max_body_generate_stream) == \
        (2048, 4096, 8192)
    assert (args.max_in_flight_per_channel, args.header_timeout, args.body_timeout) == \
        (3, 7.0, 9.0)


def test_default_spec_limits_equal_the_meter_defaults():
    assert MeterLimits().meter_limits() == Limits()


def test_log_lines_redact_credentials_and_library_exception_messages():
    formatter = logs.JsonFormatter()
    try:
        raise ValueError("Invalid header value: b'Bearer s3cr3t-token\\x00'")
    except ValueError as exc:
        record = logging.LogRecord("aiohttp.server", logging.ERROR, "", 0,
                                   "Error handling request", (), (type(exc), exc, None))
    line = formatter.format(record)
    assert "s3cr3t" not in line
    assert json.loads(line)["exception"] == "ValueError"
    own = logging.LogRecord("cocoon.x", logging.INFO, "", 0, "got %s", ("Bearer tok-123",), None)
    assert "tok-123" not in formatter.format(own)
