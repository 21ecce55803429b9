"""Billable units and the pool's price for them.

`Price` is the `price` block of an InferencePool spec; `Units` is what one call consumed.
Costs are integers of nanoton computed exactly (no floats anywhere near money).

Token categories nest as in OpenAI's usage: `input_tokens` are all prompt tokens, of which
`cached_input_tokens` were served from a prompt cache; `output_tokens` are all completion
tokens, of which `reasoning_tokens` were hidden reasoning. Each category has its own price;
the cached and reasoning prices default to the prompt and completion prices.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from cocoon.api.common import ApiModel, Nanoton

UNIT_TYPES = (
    "requests", "input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens",
)


@dataclass(frozen=True, slots=True)
class Units:
    """What one call consumed: the request itself and its tokens by category."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0

    def __add__(self, other: Units) -> Units:
        return Units(
            self.requests + other.requests,
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_input_tokens + other.cached_input_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
        )

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in UNIT_TYPES}

    def header(self) -> str:
        """An RFC 8941 dictionary, e.g. `requests=1, input_tokens=3, output_tokens=8`.

        The cached and reasoning categories appear only when non-zero.
        """
        head = (
            f"requests={self.requests}, input_tokens={self.input_tokens}, "
            f"output_tokens={self.output_tokens}"
        )
        if self.cached_input_tokens:
            head += f", cached_input_tokens={self.cached_input_tokens}"
        if self.reasoning_tokens:
            head += f", reasoning_tokens={self.reasoning_tokens}"
        return head

    @classmethod
    def parse_header(cls, value: str) -> Units:
        fields = dict(item.strip().split("=", 1) for item in value.split(",") if item.strip())
        return cls(**{k: int(v) for k, v in fields.items() if k in UNIT_TYPES})


class Price(ApiModel):
    """What each unit type costs, in nanoton. Unset types are free.

    Token prices are per `perTokens` tokens (1, 1000 or 1000000), so that prices below a
    nanoton per token can be stated; a call's token cost is rounded up to a whole nanoton.
    """

    per_request: Nanoton = Field(default="0", description="Nanoton charged per request served.")
    per_input_token: Nanoton = Field(
        default="0",
        description="Nanoton per perTokens prompt tokens (reported by the model, or counted "
        "with the pool's tokenizer).",
    )
    per_output_token: Nanoton = Field(
        default="0",
        description="Nanoton per perTokens completion tokens (a streamed response counts as "
        "one token unless the model reports completion_tokens).",
    )
    per_cached_input_token: Nanoton | None = Field(
        default=None,
        description="Nanoton per perTokens prompt tokens served from a prompt cache "
        "(cached_prompt_tokens); unset: perInputToken applies.",
    )
    per_reasoning_token: Nanoton | None = Field(
        default=None,
        description="Nanoton per perTokens reasoning tokens (reasoning_tokens, part of the "
        "completion); unset: perOutputToken applies.",
    )
    per_tokens: Literal[1, 1000, 1000000] = Field(
        default=1, description="How many tokens the token prices are for: 1, 1000 or 1000000."
    )

    def tariff(self) -> Tariff:
        return Tariff(
            int(self.per_request), int(self.per_input_token), int(self.per_output_token),
            int(self.per_input_token if self.per_cached_input_token is None
                else self.per_cached_input_token),
            int(self.per_output_token if self.per_reasoning_token is None
                else self.per_reasoning_token),
            self.per_tokens,
        )

    def cost(self, units: Units) -> int:
        return self.tariff().cost(units)

    def cli_args(self) -> list[str]:
        """The `cocoon meter serve` flags that carry this price."""
        args = [
            f"--price-per-request={self.per_request}",
            f"--price-per-input-token={self.per_input_token}",
            f"--price-per-output-token={self.per_output_token}",
            f"--price-per-tokens={self.per_tokens}",
        ]
        if self.per_cached_input_token is not None:
            args.append(f"--price-per-cached-input-token={self.per_cached_input_token}")
        if self.per_reasoning_token is not None:
            args.append(f"--price-per-reasoning-token={self.per_reasoning_token}")
        return args


@dataclass(frozen=True, slots=True)
class Tariff:
    """A `Price` parsed into integers once, for the hot path."""

    request: int
    prompt: int
    completion: int
    cached: int
    reasoning: int
    per_tokens: int = 1

    def cost(self, units: Units) -> int:
        cached = min(max(units.cached_input_tokens, 0), units.input_tokens)
        reasoning = min(max(units.reasoning_tokens, 0), units.output_tokens)
        tokens = (
            (units.input_tokens - cached) * self.prompt + cached * self.cached
            + (units.output_tokens - reasoning) * self.completion + reasoning * self.reasoning
        )
        return units.requests * self.request + -(-tokens // self.per_tokens)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The price flags of `cocoon meter serve` (what `Price.cli_args` writes)."""
    parser.add_argument("--price-per-request", default="0", help="nanoton")
    parser.add_argument("--price-per-input-token", default="0", help="nanoton")
    parser.add_argument("--price-per-output-token", default="0", help="nanoton")
    parser.add_argument("--price-per-cached-input-token", default=None,
                        help="nanoton (default: the input token price)")
    parser.add_argument("--price-per-reasoning-token", default=None,
                        help="nanoton (default: the output token price)")
    parser.add_argument("--price-per-tokens", type=int, default=1, choices=(1, 1000, 1000000),
                        help="how many tokens the token prices are for")


def from_namespace(args: argparse.Namespace) -> Price:
    return Price(
        per_request=args.price_per_request,
        per_input_token=args.price_per_input_token,
        per_output_token=args.price_per_output_token,
        per_cached_input_token=args.price_per_cached_input_token,
        per_reasoning_token=args.price_per_reasoning_token,
        per_tokens=args.price_per_tokens,
    )


def from_cli_args(argv: Sequence[str]) -> Price:
    """The price a meter started with these arguments charges: how the operator learns the
    price in force for one meter instance from its pod (a pod's arguments never change).
    Raises ValueError for arguments the meter itself would refuse."""
    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    add_arguments(parser)
    try:
        known, _ = parser.parse_known_args(list(argv))
    except (argparse.ArgumentError, SystemExit) as exc:
        raise ValueError(f"the meter's price arguments do not parse: {exc}") from exc
    return from_namespace(known)

