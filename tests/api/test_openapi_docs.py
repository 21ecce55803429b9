"""The shipped OpenAPI documents are the generated ones (regenerate: `cocoon openapi`), and they
describe the request bodies with the very models the handlers validate with."""

from __future__ import annotations

from pathlib import Path

import pytest

from cocoon import openapi
from cocoon.meter.usage_report import SignedUsageReport

DOCS = Path(__file__).resolve().parents[2] / "docs" / "openapi"


@pytest.mark.parametrize("name", sorted(openapi.DOCUMENTS))
def test_shipped_documents_are_current(name: str) -> None:
    shipped = (DOCS / f"{name}.json").read_text()
    assert shipped == openapi.render(name), f"run: cocoon openapi -o docs/openapi ({name})"


def test_the_usage_report_body_is_the_model_the_route_validates() -> None:
    document = openapi.operator_document()
    body = document["paths"]["/usage/v1/reports"]["post"]["requestBody"]
    ref = body["content"]["application/json"]["schema"]["$ref"]
    schema = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    expected = SignedUsageReport.model_json_schema(by_alias=True)
    assert set(schema["properties"]) == set(expected["properties"])
    assert schema.get("required") == expected.get("required")
