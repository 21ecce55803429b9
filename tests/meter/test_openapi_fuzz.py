"""Schemathesis over the meter's OpenAPI description (cocoon.openapi), against the running meter
in front of real Triton: valid and invalid input on every described route gets an answer, 2xx or
a JSON 4xx that says why, never a 5xx but the documented 502 (the model or Triton failed, not the
meter), and the meter lives on."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from conftest import AUTH
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from cocoon.meter.process import MeterProcess
from cocoon.openapi import meter_document

pytestmark = pytest.mark.triton
SCHEMA = schemathesis.openapi.from_dict(meter_document())
CASES = st.one_of(
    SCHEMA.as_strategy(GenerationMode.POSITIVE), SCHEMA.as_strategy(GenerationMode.NEGATIVE)
)


def check_answer(case: Any, response: Any) -> None:
    """2xx, or a refusal in the meter's one JSON shape; a 5xx only as the documented 502."""
    if response.status_code < 400:
        return
    answer = response.json()
    what = f"{case.method} {case.formatted_path} -> {response.status_code} {answer}"
    if case.formatted_path.startswith("/v1/"):  # OpenAI's shape, for OpenAI's SDKs
        error = answer.get("error") or {}
        code, reason = error.get("code"), error.get("message")
    else:
        assert isinstance(answer.get("error"), str) and answer["error"], what
        code, reason = answer.get("code"), answer.get("message")
    assert isinstance(code, str) and code and isinstance(reason, str) and reason, what
    if response.status_code >= 500:
        assert response.status_code == 502 and code in ("ModelError", "model_error"), what


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(case=CASES)
def test_every_described_route_answers(case: Any, meter: MeterProcess) -> None:
    response = case.call(
        base_url=f"http://127.0.0.1:{meter.http_port}", headers=AUTH, timeout=30
    )
    assert meter.process.poll() is None, "the meter died"
    check_answer(case, response)
