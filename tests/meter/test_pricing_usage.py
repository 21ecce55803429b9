import json
import struct

import pytest
from pydantic import ValidationError

from cocoon.meter.pricing import Price, Units
from cocoon.meter.usage import SseMeter, UsageCounter, count_event, infer_usage, is_error_document


def test_price_cost_is_exact_integer_nanoton():
    price = Price.model_validate(
        {"perRequest": "1000000000000000000000", "perInputToken": "3", "perOutputToken": "7"}
    )
    assert price.cost(Units(2, 5, 11)) == 2 * 10**21 + 15 + 77
    assert Price().cost(Units(1, 1, 1)) == 0
    assert price.to_api() == {
        "perRequest": "1000000000000000000000", "perInputToken": "3", "perOutputToken": "7",
        "perTokens": 1,
    }


@pytest.mark.parametrize("bad", ["-1", "1.5", "01", "", "1e9"])
def test_price_rejects_non_nanoton(bad):
    with pytest.raises(ValidationError):
        Price(per_request=bad)


def test_units_header_round_trips():
    units = Units(1, 12, 8)
    assert units.header() == "requests=1, input_tokens=12, output_tokens=8"
    assert Units.parse_header(units.header()) == units


def test_non_streaming_counts_only_reported_tokens():
    counter = UsageCounter()
    counter.add_response({})
    assert counter.units() == Units(1, 0, 0)
    counter = UsageCounter()
    counter.add_response({"prompt_tokens": 4, "completion_tokens": 9})
    assert counter.units() == Units(1, 4, 9)


def test_streaming_counts_responses_until_usage_replaces_them():
    counter = UsageCounter(streaming=True)
    for _ in range(3):
        counter.add_response({})
    assert counter.units() == Units(1, 0, 3)
    counter.add_response({"prompt_tokens": 2, "completion_tokens": 10})
    assert counter.units() == Units(1, 2, 10)


def test_failed_call_without_output_costs_nothing_but_partial_stream_pays():
    counter = UsageCounter(streaming=True, failed=True)
    assert counter.units() == Units()
    counter = UsageCounter(streaming=True)
    counter.add_response({})
    counter.failed = True
    assert counter.units() == Units(1, 0, 1)


def test_sse_events_split_across_chunks_count_once_complete():
    stream = (
        b'data: {"text_output":"a "}\n\n'
        b'data: {"text_output":"b "}\n\n'
        b'data: {"completion_tokens":3,"prompt_tokens":2,"text_output":"c "}\n\n'
    )
    for cut in range(1, len(stream)):
        counter = UsageCounter(streaming=True)
        sse = SseMeter()
        for part in (stream[:cut], stream[cut:]):
            for event in sse.split(part):
                count_event(counter, event)
        assert counter.units() == Units(1, 2, 3), cut


def test_sse_partial_event_is_not_charged():
    counter, sse = UsageCounter(streaming=True), SseMeter()
    for event in sse.split(b'data: {"text_output":"a "}\n\ndata: {"text_out'):
        count_event(counter, event)
    assert counter.units() == Units(1, 0, 1)


def test_sse_error_event_marks_failure():
    counter = UsageCounter(streaming=True)
    for event in SseMeter().split(b'data: {"text_output":"a "}\n\ndata: {"error":"boom"}\n\n'):
        count_event(counter, event)
    assert counter.failed
    assert counter.units() == Units(1, 0, 1)


def test_infer_usage_from_json_outputs():
    body = json.dumps({"outputs": [
        {"name": "text_output", "datatype": "BYTES", "shape": [1], "data": ["x"]},
        {"name": "prompt_tokens", "datatype": "INT32", "shape": [1], "data": [5]},
        {"name": "completion_tokens", "datatype": "INT32", "shape": [1], "data": [7]},
    ]}).encode()
    assert infer_usage(body, None) == {"prompt_tokens": 5, "completion_tokens": 7}


def test_infer_usage_from_binary_outputs():
    header = json.dumps({"outputs": [
        {"name": "OUTPUT0", "datatype": "FP32", "shape": [2],
         "parameters": {"binary_data_size": 8}},
        {"name": "completion_tokens", "datatype": "INT64", "shape": [1],
         "parameters": {"binary_data_size": 8}},
    ]}).encode()
    body = header + struct.pack("<ff", 1.0, 2.0) + struct.pack("<q", 42)
    assert infer_usage(body, len(header)) == {"completion_tokens": 42}


def test_infer_usage_skips_parsing_without_usage_tensors():
    assert infer_usage(b"not json at all", None) == {}
    assert infer_usage(b'{"outputs": "prompt_tokens"}', None) == {}


def test_error_document_detection():
    assert is_error_document(b'{"error":"generate expects model to produce exactly 1"}')
    assert not is_error_document(b'{"text_output":"error"}')
