# mypy: ignore-errors
# (runs inside Triton, which provides triton_python_backend_utils)
"""A CPU model with the interface and token economics of an LLM, for tests and the demo.

Prompt and completion are real tokens of the shipped byte-level BPE tokenizer (the same
tokenizer.json the meter can load to count prompts). The completion is a walk through a fixed
text, not a language model: where it starts depends on the prompt (temperature 0) or on a seeded
random draw (temperature > 0). Stop strings are never streamed: text that could begin one is
held back until it cannot.
"""

import hashlib
import json
import random
import time
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
TEXT = (
    "Cocoon turns attested confidential GPU nodes into a private inference pool. Every call "
    "is metered by tokens and paid for from a payment channel in TON. The operator checks "
    "each node's evidence before it places a model there, and the meter signs what it "
    "charged so that the channel's owner can verify the bill. Streams report their usage at "
    "the end, and a caller who runs out of credit is stopped before the next token. "
)


def _scalar(request, name, default):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return default
    value = tensor.as_numpy().reshape(-1)[0]
    return value.item() if isinstance(value, np.generic) else value


def _strings(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return []
    return [s.decode() if isinstance(s, bytes) else str(s) for s in tensor.as_numpy().reshape(-1)]


def _held_back(text, stops):
    """How many trailing characters of `text` could be the start of a stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.delay_ms = int(params.get("token_delay_ms", "0"))
        self.max_context = int(params.get("max_context_tokens", "4096"))
        here = Path(args["model_repository"])
        self.tokenizer = Tokenizer.from_file(str(here / "tokenizer.json"))
        self.corpus = self.tokenizer.encode(TEXT).ids

    def execute(self, requests):
        for request in requests:
            self._generate(request, request.get_response_sender())

    def _generate(self, request, sender):
        prompt = _scalar(request, "text_input", b"")
        prompt = prompt.decode() if isinstance(prompt, bytes) else str(prompt)
        prompt_tokens = len(self.tokenizer.encode(prompt, add_special_tokens=False).ids)
        max_tokens = int(_scalar(request, "max_tokens", 16))
        if prompt_tokens + max(max_tokens, 0) > self.max_context:
            error = pb_utils.TritonError(
                f"prompt ({prompt_tokens} tokens) plus max_tokens ({max_tokens}) exceeds the "
                f"context of {self.max_context} tokens; shorten the prompt or lower max_tokens"
            )
            sender.send(pb_utils.InferenceResponse(error=error), flags=FINAL)
            return
        stops = [s for s in _strings(request, "stop") if s]
        temperature = float(_scalar(request, "temperature", 0.0))
        delay = int(_scalar(request, "delay_ms", self.delay_ms)) / 1000.0
        # Sampling for a demo, not for secrets.
        seed = _scalar(request, "seed", None)
        rng = random.Random(seed) if temperature > 0 else None  # noqa: S311
        digest = hashlib.blake2b(prompt.encode(), digest_size=4).digest()
        position = int.from_bytes(digest, "little") % len(self.corpus)
        pending, generated, finish = "", 0, "length"
        for generated in range(1, max_tokens + 1):
            if delay:
                time.sleep(delay)
            if rng is not None:
                position += rng.randrange(0, 1 + int(4 * min(temperature, 2.0)))
            pending += self.tokenizer.decode([self.corpus[position % len(self.corpus)]])
            position += 1
            cut = min((i for s in stops if (i := pending.find(s)) >= 0), default=-1)
            if cut >= 0:
                pending, finish = pending[:cut], "stop"
                break
            if generated == max_tokens:
                break
            keep = _held_back(pending, stops)
            piece, pending = pending[: len(pending) - keep], pending[len(pending) - keep :]
            sender.send(self._response(piece))
        sender.send(
            self._response(pending, prompt_tokens, max(generated, 0), finish), flags=FINAL
        )

    @staticmethod
    def _response(text, prompt_tokens=None, completion_tokens=None, finish=None):
        outputs = [pb_utils.Tensor("text_output", np.array([text.encode()], dtype=np.object_))]
        if prompt_tokens is not None:
            outputs += [
                pb_utils.Tensor("prompt_tokens", np.array([prompt_tokens], np.int32)),
                pb_utils.Tensor("completion_tokens", np.array([completion_tokens], np.int32)),
                pb_utils.Tensor("finish_reason", np.array([finish.encode()], dtype=np.object_)),
            ]
        return pb_utils.InferenceResponse(output_tensors=outputs)
