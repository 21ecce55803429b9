"""Pure OpenAI <-> generate-extension translation, table-driven."""

import json

import pytest

from cocoon.meter import openai_wire as wire
from cocoon.meter.errors import MeterError, Reason
from cocoon.meter.pricing import Units

CHAT = {"model": "llm", "messages": [{"role": "user", "content": "hi"}]}


def test_chat_maps_onto_generate_inputs():
    parsed = wire.parse({**CHAT, "max_completion_tokens": 7, "stop": "\n", "temperature": 0.5,
                         "seed": 4, "stream": True, "stream_options": {"include_usage": True}},
                        chat=True, default_max_tokens=99)
    assert parsed.kserve_body() == {"text_input": "<|user|>\nhi\n<|assistant|>\n",
                                    "max_tokens": 7, "stop": ["\n"], "temperature": 0.5,
                                    "seed": 4}
    assert parsed.stream and parsed.include_usage


def test_defaults_send_only_what_the_model_needs():
    parsed = wire.parse({"model": "llm", "prompt": ["once"]}, chat=False, default_max_tokens=99)
    assert parsed.kserve_body() == {"text_input": "once", "max_tokens": 99}
    assert not parsed.stream and not parsed.include_usage


def test_chat_prompt_renders_roles_and_text_parts():
    prompt = wire.chat_prompt([
        {"role": "developer", "content": "rules"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": "c"},
    ])
    assert prompt == "<|system|>\nrules\n<|user|>\nab\n<|assistant|>\nc\n<|assistant|>\n"


@pytest.mark.parametrize(("body", "chat", "param"), [
    ({**CHAT, "tools": [{}]}, True, "tools"),
    ({**CHAT, "logit_bias": {"1": 1}}, True, "logit_bias"),
    ({**CHAT, "response_format": {"type": "json_object"}}, True, "response_format"),
    ({**CHAT, "n": 3}, True, "n"),
    ({**CHAT, "top_p": 0.5}, True, "top_p"),
    ({**CHAT, "presence_penalty": 1}, True, "presence_penalty"),
    ({**CHAT, "surprise": 1}, True, "surprise"),
    ({**CHAT, "max_tokens": -1}, True, "max_tokens"),
    ({**CHAT, "max_tokens": True}, True, "max_tokens"),
    ({**CHAT, "temperature": "hot"}, True, "temperature"),
    ({**CHAT, "stop": [""]}, True, "stop"),
    ({**CHAT, "stream_options": {"include_usage": True}}, True, "stream_options"),
    ({"model": "llm", "messages": []}, True, "messages"),
    ({"model": "llm", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
     True, "messages[0]"),
    ({"messages": CHAT["messages"]}, True, "model"),
    ({"model": "llm", "prompt": [1, 2, 3]}, False, "prompt"),
    ({"model": "llm", "prompt": "x", "messages": []}, False, "messages"),
    ({"model": "llm", "prompt": "x", "echo": True}, False, "echo"),
])
def test_refused_and_invalid_fields_name_the_field(body, chat, param):
    with pytest.raises(wire.BadRequest) as caught:
        wire.parse(body, chat=chat, default_max_tokens=8)
    assert caught.value.param == param
    error = json.loads(wire.error_body(caught.value, caught.value.code, caught.value.param))
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["param"] == param


def test_neutral_values_of_refused_fields_are_accepted():
    wire.parse({**CHAT, "logprobs": False, "tools": [], "n": 1, "top_p": 1}, chat=True,
               default_max_tokens=8)


@pytest.mark.parametrize(("reason", "kind", "code"), [
    (Reason.UNAUTHENTICATED, "invalid_request_error", "invalid_api_key"),
    (Reason.NO_CREDIT, "insufficient_quota", "insufficient_credit"),
    (Reason.OVERLOADED, "rate_limit_error", "overloaded"),
    (Reason.NOT_FOUND, "invalid_request_error", "model_not_found"),
])
def test_meter_refusals_in_openai_shape(reason, kind, code):
    body = json.loads(wire.error_body(MeterError(reason, "what to do")))
    assert body == {"error": {"message": "what to do", "type": kind, "code": code,
                              "param": None}}


def test_stream_chunks_and_usage():
    parsed = wire.parse({**CHAT, "stream": True, "stream_options": {"include_usage": True}},
                        chat=True, default_max_tokens=8)
    first = json.loads(wire.chunk(parsed, "r1", 5, role=True, text="")[6:])
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert first["usage"] is None
    assert first["id"] == "chatcmpl-r1" and first["object"] == "chat.completion.chunk"
    last = json.loads(wire.chunk(parsed, "r1", 5, units=Units(1, 3, 4, 2, 1), cost=9)[6:])
    assert last["choices"] == []
    assert last["usage"] == {
        "prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 2},
        "completion_tokens_details": {"reasoning_tokens": 1},
    }
    assert last["cocoon"] == {"request_id": "r1", "cost_nanoton": "9"}


@pytest.mark.parametrize(
    "text", ["", " meter", 'quote " and \\ back', "\u00fc\n\x00", "\x00cocoon"]
)
@pytest.mark.parametrize("chat", [True, False])
@pytest.mark.parametrize("include_usage", [True, False])
def test_text_chunk_template_builds_exactly_the_chunk(text, chat, include_usage):
    body = {"model": "llm", "stream": True,
            **({"messages": CHAT["messages"]} if chat else {"prompt": "p"})}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    parsed = wire.parse(body, chat=chat, default_max_tokens=8)
    prefix, suffix = wire.text_chunk_template(parsed, "r9", 77)
    assert prefix + json.dumps(text).encode() + suffix == wire.chunk(parsed, "r9", 77, text=text)
