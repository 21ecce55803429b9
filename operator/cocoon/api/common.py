"""Shared pieces of every CRD model: the base model, metav1.Condition, TON amounts, durations.

The pydantic models are the single source of truth: `cocoon.api.crdgen` turns them into the
OpenAPI v3 schemas in `crds/`, so every field carries a description and its validation here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
NANOTON_PATTERN = r"^(0|[1-9][0-9]{0,38})$"


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields ignored for version skew."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        use_enum_values=False,
        validate_default=True,
    )

    def to_api(self) -> dict[str, object]:
        """The object as the API server stores it: camelCase, no unset optional fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# The largest count a status may hold: Kubernetes stores int64 but checks a schema's
# `maximum` as float64 (2^63 - 1 rounds to 2^63 and wraps to -2^63), so the bound is the
# largest integer float64 holds exactly. A larger one would be a 422 from the API server.
MAX_COUNT = (1 << 53) - 1

Nanoton = Annotated[
    str,
    Field(
        pattern=NANOTON_PATTERN,
        description="An amount of TON in nanoton (1 TON = 10^9 nanoton), as a decimal string "
        "because amounts exceed 2^53.",
    ),
]


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """A metav1.Condition: one aspect of the object's state, with a reason a human can act on."""

    type: str = Field(
        description="Kind of condition in CamelCase, e.g. Ready.",
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        description="Machine-readable CamelCase reason for the last transition.",
        min_length=1,
        max_length=1024,
        pattern=REASON_PATTERN,
    )
    message: str = Field(
        default="",
        description="What is wrong and what to do about it, for a human.",
        max_length=32768,
    )
    observed_generation: int = Field(
        default=0,
        ge=0,
        description="The .metadata.generation this condition was computed from.",
    )
    last_transition_time: datetime = Field(
        description="When the status last changed (RFC 3339).",
    )


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def set_condition(
    conditions: list[Condition],
    *,
    type: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> list[Condition]:
    """Return `conditions` with `type` set; lastTransitionTime moves only when status changes."""
    previous = next((c for c in conditions if c.type == type), None)
    transition = (
        previous.last_transition_time if previous is not None and previous.status == status else now
    )
    updated = Condition(
        type=type,
        status=status,
        reason=reason,
        message=message,
        observed_generation=generation,
        last_transition_time=transition,
    )
    return (
        [updated if c.type == type else c for c in conditions]
        if previous
        else [
            *conditions,
            updated,
        ]
    )


def find_condition(conditions: list[Condition], type: str) -> Condition | None:
    return next((c for c in conditions if c.type == type), None)


ConditionList = Annotated[
    list[Condition],
    Field(
        default_factory=list,
        description="Current state as metav1.Condition entries; Ready summarises the rest.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    ),
]
