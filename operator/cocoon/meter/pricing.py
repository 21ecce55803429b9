"""Billable units and the pool's price for them.

`Price` is the `price` block of an InferencePool spec; `Units` is what one call consumed.
Costs are integers of nanoton computed exactly (no floats anywhere near money).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field

from cocoon.api.common import ApiModel, Nanoton

UNIT_TYPES = ("requests", "input_tokens", "output_tokens")


@dataclass(frozen=True, slots=True)
class Units:
    """What one call consumed: the request itself, prompt tokens and generated tokens."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Units) -> Units:
        return Units(
            self.requests + other.requests,
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
        }

    def header(self) -> str:
        """An RFC 8941 dictionary, e.g. `requests=1, input_tokens=3, output_tokens=8`."""
        return (
            f"requests={self.requests}, input_tokens={self.input_tokens}, "
            f"output_tokens={self.output_tokens}"
        )

    @classmethod
    def parse_header(cls, value: str) -> Units:
        fields = dict(item.strip().split("=", 1) for item in value.split(",") if item.strip())
        return cls(**{k: int(v) for k, v in fields.items() if k in UNIT_TYPES})


class Price(ApiModel):
    """What one unit of each type costs, in nanoton. Unset types are free."""

    per_request: Nanoton = Field(default="0", description="Nanoton charged per request served.")
    per_input_token: Nanoton = Field(
        default="0", description="Nanoton per prompt token, when the model reports usage."
    )
    per_output_token: Nanoton = Field(
        default="0",
        description="Nanoton per generated token (a streamed response counts as one token "
        "unless the model reports completion_tokens).",
    )

    def cost(self, units: Units) -> int:
        return (
            units.requests * int(self.per_request)
            + units.input_tokens * int(self.per_input_token)
            + units.output_tokens * int(self.per_output_token)
        )
