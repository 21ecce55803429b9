"""The caller's side of the local stack's HTTP: JSON requests to the operator's API, and paid
streams to a pool's meter through the caller's verified client, each reduced to what the caller
saw so the story can say it and the tests can assert it."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import httpx2
import openai

MODEL = "tokens"  # the demo pools' model (models/tokens, a word echo streamer)


@dataclass
class Call:
    """One request as the caller saw it."""

    status: int
    tokens: int = 0
    cost: int = 0
    receipt_cost: int | None = None
    error: str = ""



def http_json(
    method: str, url: str, body: Any = None, token: str = "",
    context: ssl.SSLContext | None = None, *, headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json", **(headers or {})}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310 - loopback URLs of our own stack
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:  # noqa: S310
            text, status = response.read().decode(), response.status
    except urllib.error.HTTPError as exc:
        text, status = exc.read().decode(), exc.code
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def generate_stream(
    http: httpx2.Client, base_url: str, token: str, prompt: str, max_tokens: int
) -> Call:
    """A streamed generation through the caller's verified client: the endpoint is attested on
    the connection before the prompt leaves, and the stream's signed receipt is checked and
    kept. The cost is the receipt's (and the meter's closing `cocoon.usage` event's)."""
    body = {"text_input": prompt, "max_tokens": max_tokens}
    with http.stream(
        "POST", f"{base_url}/v2/models/{MODEL}/generate_stream", json=body,
        headers={"Authorization": f"Bearer {token}"}, timeout=60,
    ) as response:
        if response.status_code != 200:
            return Call(response.status_code, error=response.read().decode()[:300])
        call, event = Call(response.status_code), ""
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data = json.loads(line.split(":", 1)[1])
                if event == "cocoon.usage":
                    call.cost = int(data["costNanoton"])
                elif event == "cocoon.receipt":
                    call.receipt_cost = int(data["receipt"]["costNanoton"])
                elif "error" in data:
                    call.error = str(data["error"])
                else:
                    call.tokens += 1
                event = ""
        return call


def chat_stream(
    http: httpx2.Client, base_url: str, token: str, prompt: str, max_tokens: int
) -> Call:
    """A streamed chat completion with the official `openai` package, unchanged but for the base
    URL, the key and the caller's verified client: attested before the prompt leaves, its signed
    receipt checked and kept. The cost is the one the final usage chunk reports under `cocoon`."""
    client = openai.OpenAI(
        base_url=f"{base_url}/v1", api_key=token, http_client=http, max_retries=0, timeout=60
    )
    call = Call(200)
    try:
        with client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens,
            stream=True, stream_options={"include_usage": True},
        ) as stream:
            for chunk in stream:
                if chunk.usage is not None:
                    call.tokens = chunk.usage.completion_tokens
                    call.cost = int((chunk.model_extra or {})["cocoon"]["cost_nanoton"])
    except openai.APIStatusError as exc:
        return Call(exc.status_code, error=exc.message[:300])
    except openai.APIError as exc:  # an error event inside the stream
        call.error = exc.message[:300]
    return call
