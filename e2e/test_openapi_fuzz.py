"""Schemathesis over the operator API's OpenAPI description (cocoon.openapi), against the running
operator process on the real API server, over its TLS: valid and invalid input on every described
route gets a 2xx or a JSON 4xx with a reason and a message, never a 5xx, and the operator lives."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from cocoon.devstack.stack import Operator
from cocoon.openapi import operator_document

pytestmark = pytest.mark.e2e
SCHEMA = schemathesis.openapi.from_dict(operator_document())
CASES = st.one_of(
    SCHEMA.as_strategy(GenerationMode.POSITIVE), SCHEMA.as_strategy(GenerationMode.NEGATIVE)
)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(case=CASES)
def test_every_described_route_answers(case: Any, operator: Operator) -> None:
    response = case.call(base_url=operator.api_url, verify=str(operator.ca_file), timeout=30)
    assert operator.process is not None and operator.process.alive(), "the operator died"
    what = f"{case.method} {case.formatted_path} -> {response.status_code} {response.text[:300]}"
    assert response.status_code < 500, what
    if response.status_code >= 400:
        error = response.json()["error"]
        assert isinstance(error["reason"], str) and error["reason"], what
        assert isinstance(error["message"], str) and error["message"], what
