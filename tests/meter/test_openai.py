"""The official `openai` package against the meter in front of a real Triton serving `llm`.

Streamed and returned usage must equal what the journal charged; refusals come in OpenAI's
error shape, cause no journal writes, and the SDK raises its own exception types for them.
"""

import asyncio

import aiohttp
import openai
import pytest
from conftest import CHANNEL, CREDENTIAL
from tokenizers import Tokenizer

from cocoon.devstack.triton import DEMO_MODELS
from cocoon.meter.journal import read_charges
from cocoon.meter.openai_wire import chat_prompt
from cocoon.meter.pricing import Price, Units
from cocoon.meter.process import start_meter, write_credits

pytestmark = pytest.mark.triton

TOKENIZER_PATH = DEMO_MODELS / "llm" / "tokenizer.json"
TOKENIZER = Tokenizer.from_file(str(TOKENIZER_PATH))
PRICE = Price(per_request="1000", per_input_token="10000", per_output_token="200000",
              per_tokens=1000)
SMALL_CREDENTIAL = "test-credential-small"
MESSAGES = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What does the meter charge for?"}]


def _prompt_tokens(messages):
    return len(TOKENIZER.encode(chat_prompt(messages), add_special_tokens=False).ids)


def _worst(messages, max_tokens):
    return PRICE.cost(Units(1, _prompt_tokens(messages), max_tokens))


SMALL_LIMIT = _worst(MESSAGES, 40) + _worst(MESSAGES, 5)


def _start(triton_server, tmp_path, *extra):
    write_credits(tmp_path / "credits.json", {
        CREDENTIAL: (CHANNEL, 10**15), SMALL_CREDENTIAL: ("tenant/small", SMALL_LIMIT),
    })
    return start_meter(triton_server, tmp_path, price=PRICE, models=("llm", "tokens"),
                       extra_args=(f"--tokenizer={TOKENIZER_PATH}", *extra))


@pytest.fixture
def meter(triton_server, tmp_path):
    process = _start(triton_server, tmp_path)
    yield process
    process.stop()


def _client(meter, key=CREDENTIAL):
    return openai.OpenAI(base_url=f"{meter.http_url}/v1", api_key=key, max_retries=0)


def _journal_units(meter):
    return [(c.units, c.cost_nanoton, c.endpoint) for c in read_charges(meter.journal)]


def test_chat_completion_usage_is_what_the_journal_charged(meter):
    response = _client(meter).chat.completions.with_raw_response.create(
        model="llm", messages=MESSAGES, max_tokens=12)
    completion = response.parse()
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content
    assert completion.usage.prompt_tokens == _prompt_tokens(MESSAGES)
    assert completion.usage.completion_tokens == 12
    units = Units(1, completion.usage.prompt_tokens, 12)
    cost = PRICE.cost(units)
    assert completion.model_extra["cocoon"]["cost_nanoton"] == str(cost)
    assert _journal_units(meter) == [(units, cost, "chat.completions")]
    assert response.headers["Cocoon-Request-Id"] == completion.model_extra["cocoon"]["request_id"]
    assert completion.id == "chatcmpl-" + response.headers["Cocoon-Request-Id"]


def test_streamed_chat_matches_the_whole_answer_and_the_journal(meter):
    client = _client(meter)
    whole = client.chat.completions.create(model="llm", messages=MESSAGES,
                                           max_completion_tokens=20)
    stream = client.chat.completions.create(
        model="llm", messages=MESSAGES, max_completion_tokens=20, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and set(finishes[:-1]) == {None}
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    charged = _journal_units(meter)[-1]
    assert charged[0] == Units(1, usage.prompt_tokens, usage.completion_tokens)
    assert chunks[-1].model_extra["cocoon"]["cost_nanoton"] == str(charged[1])


def test_stop_ends_the_completion_with_finish_reason_stop(meter):
    client = _client(meter)
    full = client.completions.create(model="llm", prompt="Tell me", max_tokens=60)
    text = full.choices[0].text
    stop = text[len(text) // 2:][:5]
    cut = client.completions.create(model="llm", prompt="Tell me", max_tokens=60, stop=[stop])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == text[: text.index(stop)]
    assert cut.usage.completion_tokens < 60


async def test_async_client_streams_completions(meter):
    client = openai.AsyncOpenAI(base_url=f"{meter.http_url}/v1", api_key=CREDENTIAL,
                                max_retries=0)
    stream = await client.completions.create(
        model="llm", prompt="one two three", max_tokens=8, temperature=0.7, seed=3,
        stream=True, stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    pieces = [c.choices[0].text for c in chunks if c.choices]
    assert len([p for p in pieces if p]) == 8
    usage = chunks[-1].usage
    assert usage.completion_tokens == 8
    assert usage.prompt_tokens == len(TOKENIZER.encode("one two three").ids)
    results = await asyncio.gather(*(client.chat.completions.create(
        model="llm", messages=MESSAGES, max_tokens=4) for _ in range(4)))
    assert {r.usage.completion_tokens for r in results} == {4}
    assert len(_journal_units(meter)) == 5
    await client.close()


def test_models_lists_the_pool_models(meter):
    assert [m.id for m in _client(meter).models.list()] == ["llm", "tokens"]


def test_prompt_is_counted_with_the_tokenizer_when_the_model_does_not_report_it(meter):
    prompt = "count these prompt tokens"
    # `tokens` with max_tokens 0 sends no response at all, so no usage either.
    done = _client(meter).completions.create(model="tokens", prompt=prompt, max_tokens=0)
    assert done.usage.prompt_tokens == len(TOKENIZER.encode(prompt).ids) > 0
    assert _journal_units(meter)[-1][0] == Units(1, done.usage.prompt_tokens, 0)


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
    ({"logprobs": True}, "logprobs"),
    ({"logit_bias": {"1": 5}}, "logit_bias"),
    ({"n": 2}, "n"),
    ({"temperature": 3}, "temperature"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"extra_body": {"frobnicate": 1}}, "frobnicate"),
    ({"messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]}, "messages[0]"),
])
def test_unsupported_fields_are_refused_not_dropped(meter, kwargs, param):
    call = {"model": "llm", "messages": MESSAGES, **kwargs}
    with pytest.raises(openai.BadRequestError) as caught:
        _client(meter).chat.completions.create(**call)
    error = caught.value.body
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert _journal_units(meter) == []


def test_refusals_use_openai_shapes_and_write_nothing(meter):
    with pytest.raises(openai.AuthenticationError) as caught:
        _client(meter, "wrong-key").chat.completions.create(model="llm", messages=MESSAGES)
    assert caught.value.body["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        _client(meter, "wrong-key").models.list()
    with pytest.raises(openai.NotFoundError) as caught:
        _client(meter).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert caught.value.body["code"] == "model_not_found"
    with pytest.raises(openai.APIStatusError) as caught:
        _client(meter, SMALL_CREDENTIAL).chat.completions.create(
            model="llm", messages=MESSAGES, max_tokens=1000)
    assert caught.value.status_code == 402
    assert caught.value.body["type"] == "insufficient_quota"
    assert _journal_units(meter) == []


def test_max_tokens_is_reserved_before_forwarding_and_the_rest_released(meter):
    client = _client(meter, SMALL_CREDENTIAL)
    # Room for one 40-token worst case plus one 5-token worst case. A 40-token call that
    # stops early releases what it did not use, so a second 40-token call fits.
    text = _client(meter).chat.completions.create(
        model="llm", messages=MESSAGES, max_tokens=40).choices[0].message.content
    stop = text[6:10]
    first = client.chat.completions.create(model="llm", messages=MESSAGES, max_tokens=40,
                                           stop=stop)
    assert first.choices[0].finish_reason == "stop"
    assert int(first.model_extra["cocoon"]["cost_nanoton"]) < _worst(MESSAGES, 5)
    second = client.chat.completions.create(model="llm", messages=MESSAGES, max_tokens=40)
    assert second.usage.completion_tokens == 40
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="llm", messages=MESSAGES, max_tokens=40)
    assert caught.value.status_code == 402


def test_overload_is_429_in_openai_shape(triton_server, tmp_path):
    process = _start(triton_server, tmp_path, "--max-in-flight=1")
    try:
        client = _client(process)
        stream = client.completions.create(model="llm", prompt="slow", max_tokens=2000,
                                           stream=True, extra_body={})
        first = next(iter(stream))  # the first call is now in flight
        assert first.choices
        with pytest.raises(openai.RateLimitError) as caught:
            client.completions.create(model="llm", prompt="x", max_tokens=1)
        assert caught.value.body["code"] == "overloaded"
        assert caught.value.response.headers["Retry-After"] == "1"
        stream.close()
    finally:
        process.stop()


async def _post_raw(url, data, headers):
    async with aiohttp.ClientSession() as session, session.post(
            url, data=data, headers=headers) as response:
        return response.status, await response.json()


@pytest.mark.parametrize("chunked", [False, True])
async def test_oversized_bodies_are_refused_before_any_work(meter, chunked):
    body = b'{"model": "llm", "prompt": "' + b"a" * (3 << 20) + b'"}'

    async def pieces():
        for i in range(0, len(body), 65536):
            yield body[i:i + 65536]

    status, error = await _post_raw(
        f"{meter.http_url}/v1/completions", pieces() if chunked else body,
        {"Authorization": f"Bearer {CREDENTIAL}", "Content-Type": "application/json"})
    assert status == 400
    assert error["error"]["code"] == "request_too_large"
    assert _journal_units(meter) == []


async def test_a_body_that_is_not_json_is_a_400_after_authentication(meter):
    url = f"{meter.http_url}/v1/chat/completions"
    status, error = await _post_raw(url, b"{not json", {"Authorization": f"Bearer {CREDENTIAL}"})
    assert status == 400
    assert error["error"]["type"] == "invalid_request_error"
    status, error = await _post_raw(url, b"{not json", {})
    assert (status, error["error"]["code"]) == (401, "invalid_api_key")


@pytest.mark.parametrize("stream", [False, True])
def test_model_errors_are_400s_with_the_models_reason_and_cost_nothing(meter, stream):
    with pytest.raises(openai.BadRequestError) as caught:
        _client(meter).completions.create(model="llm", prompt="word " * 5000, max_tokens=4,
                                          stream=stream)
    assert caught.value.body["code"] == "model_error"
    assert "exceeds the context of 4096 tokens" in caught.value.body["message"]
    assert "model.py" not in caught.value.body["message"]  # no traceback from the model
    assert [(units, cost) for units, cost, _ in _journal_units(meter)] == [(Units(), 0)]
