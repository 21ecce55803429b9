"""The models are the truth: CRDs regenerate identically, every field is described, bad input
is refused with the field named, conditions keep their transition time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from cocoon.api import crdgen
from cocoon.api.common import Condition, ConditionStatus, set_condition
from cocoon.api.inferencepool import InferencePoolSpec
from cocoon.api.paymentchannel import PayerSpec
from cocoon.api.resources import RESOURCES

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("directory", ["crds", "charts/cocoon/files/crds"])
def test_committed_crds_match_the_models(directory: str) -> None:
    assert crdgen.check(REPO / directory) == []


def test_check_reports_a_hand_edit(tmp_path: Path) -> None:
    crdgen.write(tmp_path)
    target = tmp_path / crdgen.filename(RESOURCES[0])
    target.write_text(target.read_text().replace("description:", "description: edited", 1))
    (tmp_path / "stray.yaml").write_text("{}")
    problems = crdgen.check(tmp_path)
    assert len(problems) == 2
    assert "edited" in "".join(problems)
    assert "stray.yaml" in "".join(problems)


def _walk(schema: dict[str, Any], path: str) -> list[str]:
    missing = [] if schema.get("description") else [path]
    for name, sub in (schema.get("properties") or {}).items():
        missing += _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict) and schema["items"].get("properties"):
        missing += _walk(schema["items"], f"{path}[]")
    return missing


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.kind)
def test_every_field_is_described(resource: Any) -> None:
    schema = crdgen.crd(resource)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _walk(schema["properties"]["spec"], "spec") == []
    assert _walk(schema["properties"]["status"], "status") == []


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.kind)
def test_printer_columns_and_names(resource: Any) -> None:
    version = crdgen.crd(resource)["spec"]["versions"][0]
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Message"]["priority"] == 1
    names = crdgen.crd(resource)["spec"]["names"]
    assert names["categories"] == ["cocoon"]
    assert names["shortNames"]
    assert version["subresources"]["status"] == {}
    # kubectl shows a `date` column as an age: a future time (an expiry) prints `<invalid>`
    dates = [c["jsonPath"] for c in columns.values() if c.get("type") == "date"]
    assert dates == [".metadata.creationTimestamp"]


def test_status_schemas_carry_no_defaults() -> None:
    for resource in RESOURCES:
        status = crdgen.structural(resource.status, defaults=False)
        assert "default" not in str(status), resource.kind


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"replicas": -1}, "replicas"),
        ({"teeTypes": []}, "teeTypes"),
        ({"price": {"perRequest": "01"}}, "price.perRequest"),
        ({"model": {"name": "m", "repository": {}}}, "model.repository"),
    ],
)
def test_bad_pool_specs_name_the_field(patch: dict[str, Any], field: str) -> None:
    base: dict[str, Any] = {"model": {"name": "m", "repository": {"pvc": {"claimName": "x"}}}}
    base.update(patch)
    with pytest.raises(ValidationError) as info:
        InferencePoolSpec.model_validate(base)
    locs = [".".join(str(p) for p in e["loc"]) for e in info.value.errors()]
    assert any(loc.startswith(field) for loc in locs), locs


def test_payer_key_must_match_signing_mode() -> None:
    with pytest.raises(ValidationError, match="Managed signing needs keySecretRef"):
        PayerSpec.model_validate({"signing": "Managed"})
    with pytest.raises(ValidationError, match="Client signing needs publicKey"):
        PayerSpec.model_validate({"signing": "Client"})
    assert PayerSpec.model_validate({"signing": "Client", "publicKey": "ab" * 32}).public_key


def test_set_condition_moves_transition_time_only_on_status_change() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    t1 = t0 + timedelta(minutes=5)
    conds = set_condition(
        [],
        type="Ready",
        status=ConditionStatus.FALSE,
        reason="A",
        message="a",
        generation=1,
        now=t0,
    )
    same = set_condition(
        conds,
        type="Ready",
        status=ConditionStatus.FALSE,
        reason="B",
        message="b",
        generation=2,
        now=t1,
    )
    flipped = set_condition(
        same,
        type="Ready",
        status=ConditionStatus.TRUE,
        reason="C",
        message="c",
        generation=2,
        now=t1,
    )
    assert [c.last_transition_time for c in (conds[0], same[0], flipped[0])] == [t0, t0, t1]
    assert (same[0].reason, same[0].observed_generation) == ("B", 2)
    assert len(flipped) == 1
    with pytest.raises(ValidationError):
        Condition(
            type="Ready",
            status=ConditionStatus.TRUE,
            reason="not camel case",
            last_transition_time=t0,
        )
