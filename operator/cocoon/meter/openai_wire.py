"""Pure translation between OpenAI's completion APIs and the KServe generate extension.

A request maps onto the pool's Triton model by name: `model` must be one the pool serves;
chat messages are rendered into one prompt with the tokenizer's role markers; `max_tokens`
(or `max_completion_tokens`), `stop`, `temperature` and `seed` become the model's inputs of
the same names. Fields this meter cannot honour are refused with a 400 naming the field,
never silently dropped (REFUSED); so is any field it does not know.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cocoon.meter.errors import MeterError, Reason
from cocoon.meter.pricing import Units

CHAT_ROLES = {"system": "<|system|>", "developer": "<|system|>", "user": "<|user|>",
              "assistant": "<|assistant|>"}
ASSISTANT_TURN = "<|assistant|>\n"
MAX_STOPS = 4
# Refused: the meter cannot honour them with a generate-extension model.
REFUSED = frozenset({
    "tools", "tool_choice", "functions", "function_call", "parallel_tool_calls", "logprobs",
    "top_logprobs", "logit_bias", "best_of", "echo", "suffix", "response_format", "audio",
    "modalities", "prediction", "web_search_options", "reasoning_effort",
})
# Accepted and applied (model inputs, stream shape) or meaningless here (user, metadata, store).
_COMMON = frozenset({"model", "max_tokens", "stop", "temperature", "seed", "n", "stream",
                     "stream_options", "user", "metadata", "store", "top_p",
                     "frequency_penalty", "presence_penalty"})
CHAT_FIELDS = _COMMON | {"messages", "max_completion_tokens"}
COMPLETION_FIELDS = _COMMON | {"prompt"}

_ERROR_TYPES = {
    Reason.UNAUTHENTICATED: ("invalid_request_error", "invalid_api_key"),
    Reason.NO_CREDIT: ("insufficient_quota", "insufficient_credit"),
    Reason.OVERLOADED: ("rate_limit_error", "overloaded"),
    Reason.NOT_FOUND: ("invalid_request_error", "model_not_found"),
    Reason.FORBIDDEN: ("invalid_request_error", "endpoint_not_served"),
    Reason.UPSTREAM: ("api_error", "upstream_unavailable"),
    Reason.BAD_REQUEST: ("invalid_request_error", "invalid_request"),
}


def error_body(exc: MeterError, code: str | None = None, param: str | None = None) -> bytes:
    """OpenAI's error shape: `{"error": {"message", "type", "code", "param"}}`."""
    kind, default_code = _ERROR_TYPES[exc.reason]
    return json.dumps({"error": {
        "message": exc.message, "type": kind, "code": code or default_code, "param": param,
    }}).encode()


class BadRequest(MeterError):
    """A 400 that names the offending field."""

    def __init__(self, message: str, param: str | None = None,
                 code: str = "invalid_request") -> None:
        super().__init__(Reason.BAD_REQUEST, message)
        self.param = param
        self.code = code


@dataclass(frozen=True)
class GenerateRequest:
    """One OpenAI request, checked, in the terms of a generate-extension model."""

    chat: bool
    model: str
    prompt: str
    max_tokens: int
    stop: tuple[str, ...] = ()
    temperature: float | None = None
    seed: int | None = None
    stream: bool = False
    include_usage: bool = False

    def kserve_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"text_input": self.prompt, "max_tokens": self.max_tokens}
        if self.stop:
            body["stop"] = list(self.stop)
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.seed is not None:
            body["seed"] = self.seed
        return body


def _number(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise BadRequest(f"'{name}' must be a number from {low} to {high}", name)
    return float(value)


def _int(body: dict[str, Any], name: str, low: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise BadRequest(f"'{name}' must be an integer >= {low}", name)
    return value


def _check_fields(body: dict[str, Any], allowed: frozenset[str]) -> None:
    for name, value in body.items():
        if name in REFUSED:
            if value in (None, False, [], {}):
                continue
            raise BadRequest(
                f"'{name}' is not supported by this pool's meter; remove it (see the README's "
                "OpenAI section for what is supported)", name, "unsupported_parameter",
            )
        if name not in allowed:
            raise BadRequest(f"unknown field '{name}'; remove it", name, "unsupported_parameter")
    if body.get("n", 1) != 1:
        raise BadRequest("only n=1 is supported; send one request per completion", "n",
                         "unsupported_parameter")
    for name, neutral in (("top_p", 1), ("frequency_penalty", 0), ("presence_penalty", 0)):
        if body.get(name, neutral) not in (neutral, None):
            raise BadRequest(f"'{name}' other than {neutral} is not supported; remove it", name,
                             "unsupported_parameter")


def _stops(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if (not isinstance(stops, list) or len(stops) > MAX_STOPS
            or not all(isinstance(s, str) and s for s in stops)):
        raise BadRequest(f"'stop' must be a non-empty string or a list of up to {MAX_STOPS}",
                         "stop")
    return tuple(stops)


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" \
                    or not isinstance(part.get("text"), str):
                raise BadRequest(f"{where}: only text content parts are supported", where)
            parts.append(part["text"])
        return "".join(parts)
    raise BadRequest(f"{where}: content must be a string or a list of text parts", where)


def chat_prompt(messages: Any) -> str:
    """Render messages with the tokenizer's role markers, ending with the assistant's turn."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list", "messages")
    lines = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role not in CHAT_ROLES:
            raise BadRequest(f"{where}.role must be one of {sorted(CHAT_ROLES)} (tool calls "
                             "are not supported)", where)
        lines.append(f"{CHAT_ROLES[role]}\n{_text(message.get('content'), where)}\n")
    return "".join(lines) + ASSISTANT_TURN


def _completion_prompt(body: dict[str, Any]) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise BadRequest("'prompt' must be a string (token arrays and batches are not "
                         "supported)", "prompt")
    return prompt


def parse(body: Any, *, chat: bool, default_max_tokens: int) -> GenerateRequest:
    """Check an OpenAI request body; raises BadRequest naming the field at fault."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    _check_fields(body, CHAT_FIELDS if chat else COMPLETION_FIELDS)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required: one of GET /v1/models", "model")
    prompt = chat_prompt(body.get("messages")) if chat else _completion_prompt(body)
    max_tokens = _int(body, "max_completion_tokens", 0) if chat else None
    if max_tokens is None:
        max_tokens = _int(body, "max_tokens", 0)
    options = body.get("stream_options")
    stream = bool(body.get("stream"))
    if options is not None and (not stream or not isinstance(options, dict)):
        raise BadRequest("'stream_options' is only allowed with stream: true", "stream_options")
    seed = _int(body, "seed", -(2**63))
    return GenerateRequest(
        chat=chat, model=model, prompt=prompt,
        max_tokens=default_max_tokens if max_tokens is None else max_tokens,
        stop=_stops(body.get("stop")), temperature=_number(body, "temperature", 0, 2),
        seed=seed, stream=stream,
        include_usage=bool(options and options.get("include_usage")),
    )


def usage(units: Units) -> dict[str, Any]:
    return {
        "prompt_tokens": units.input_tokens,
        "completion_tokens": units.output_tokens,
        "total_tokens": units.input_tokens + units.output_tokens,
        "prompt_tokens_details": {"cached_tokens": units.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": units.reasoning_tokens},
    }


def completion_id(request: GenerateRequest, request_id: str) -> str:
    return ("chatcmpl-" if request.chat else "cmpl-") + request_id


def response(
    request: GenerateRequest, request_id: str, created: int, *, text: str, finish: str,
    units: Units, cost: int,
) -> dict[str, Any]:
    """A whole (non-streaming) chat.completion or text_completion."""
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
    if request.chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return {
        "id": completion_id(request, request_id), "created": created, "model": request.model,
        "object": "chat.completion" if request.chat else "text_completion",
        "choices": [choice], "usage": usage(units),
        "cocoon": {"request_id": request_id, "cost_nanoton": str(cost)},
    }


def chunk(
    request: GenerateRequest, request_id: str, created: int, *, text: str | None = None,
    role: bool = False, finish: str | None = None, units: Units | None = None, cost: int = 0,
) -> bytes:
    """One SSE event of a stream: a delta, the finish, or (choices empty) the usage."""
    out: dict[str, Any] = {
        "id": completion_id(request, request_id), "created": created, "model": request.model,
        "object": "chat.completion.chunk" if request.chat else "text_completion",
    }
    if units is not None:
        out["choices"] = []
        out["usage"] = usage(units)
        out["cocoon"] = {"request_id": request_id, "cost_nanoton": str(cost)}
    else:
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
        if request.chat:
            delta: dict[str, Any] = {"role": "assistant"} if role else {}
            if text is not None:
                delta["content"] = text
            choice["delta"] = delta
        else:
            choice["text"] = text or ""
        out["choices"] = [choice]
        if request.include_usage:
            out["usage"] = None
    return b"data: " + json.dumps(out, separators=(",", ":")).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"
_SENTINEL = "\x00cocoon-text\x00"


def text_chunk_template(
    request: GenerateRequest, request_id: str, created: int
) -> tuple[bytes, bytes]:
    """`chunk(text=t)` is `prefix + json(t) + suffix`: built once per stream, so each token
    costs one string encode instead of a dict and a whole JSON document."""
    whole = chunk(request, request_id, created, text=_SENTINEL)
    prefix, suffix = whole.split(json.dumps(_SENTINEL, separators=(",", ":")).encode())
    return prefix, suffix


def models_list(models: tuple[str, ...], owner: str) -> dict[str, Any]:
    return {"object": "list", "data": [
        {"id": m, "object": "model", "created": 0, "owned_by": owner} for m in models
    ]}
