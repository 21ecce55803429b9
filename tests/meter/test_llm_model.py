"""The demo LLM model (devstack/models/llm) on a real Triton: real tokens, stops, usage."""

import json

import aiohttp
import pytest
from tokenizers import Tokenizer

from cocoon.devstack.triton import DEMO_MODELS

pytestmark = pytest.mark.triton

TOKENIZER = Tokenizer.from_file(str(DEMO_MODELS / "llm" / "tokenizer.json"))


async def _stream(server, body):
    url = f"{server.http_url}/v2/models/llm/generate_stream"
    async with aiohttp.ClientSession() as s, s.post(url, json=body) as r:
        text = await r.text()
    return [json.loads(e[5:]) for e in text.split("\n\n") if e.startswith("data:")]


async def test_streams_one_real_token_per_response_and_reports_usage(triton_server):
    prompt = "How does the meter charge for tokens?"
    events = await _stream(triton_server, {"text_input": prompt, "max_tokens": 12})
    assert len(events) == 12
    last = events[-1]
    assert last["prompt_tokens"] == len(TOKENIZER.encode(prompt).ids)
    assert last["completion_tokens"] == 12
    assert last["finish_reason"] == "length"
    assert all("completion_tokens" not in e for e in events[:-1])
    pieces = [e["text_output"] for e in events]
    assert all(len(TOKENIZER.encode(p).ids) == 1 for p in pieces)
    assert len(TOKENIZER.encode("".join(pieces)).ids) <= 12


async def test_same_prompt_at_temperature_zero_is_deterministic(triton_server):
    body = {"text_input": "repeat me", "max_tokens": 8}
    first, second = await _stream(triton_server, body), await _stream(triton_server, body)
    assert [e["text_output"] for e in first] == [e["text_output"] for e in second]
    other = await _stream(triton_server, {**body, "text_input": "something else entirely"})
    assert [e["text_output"] for e in other] != [e["text_output"] for e in first]


async def test_seeded_sampling_is_reproducible(triton_server):
    body = {"text_input": "x", "max_tokens": 10, "temperature": 1.0, "seed": 7}
    first, second = await _stream(triton_server, body), await _stream(triton_server, body)
    assert [e["text_output"] for e in first] == [e["text_output"] for e in second]


async def test_stop_string_ends_the_stream_and_is_never_sent(triton_server):
    body = {"text_input": "Hello there", "max_tokens": 200}
    full = "".join(e["text_output"] for e in await _stream(triton_server, body))
    stop = full[len(full) // 3:][:7]  # a string the model would produce, spanning tokens
    events = await _stream(triton_server, {**body, "stop": [stop, "never-produced"]})
    text = "".join(e["text_output"] for e in events)
    assert stop not in text
    assert full.startswith(text)
    assert full.index(stop) == len(text)
    assert events[-1]["finish_reason"] == "stop"
    assert events[-1]["completion_tokens"] < 200


async def test_prompt_beyond_the_context_is_an_error(triton_server):
    url = f"{triton_server.http_url}/v2/models/llm/generate_stream"
    body = {"text_input": "word " * 5000, "max_tokens": 4}
    async with aiohttp.ClientSession() as s, s.post(url, json=body) as r:
        text = await r.text()
    assert "exceeds the context of 4096 tokens" in text


async def test_zero_max_tokens_reports_the_prompt_only(triton_server):
    events = await _stream(triton_server, {"text_input": "just count me", "max_tokens": 0})
    assert [(e["completion_tokens"], e["text_output"]) for e in events] == [(0, "")]
    assert events[0]["prompt_tokens"] == len(TOKENIZER.encode("just count me").ids)
