import json
import os

import pytest

from cocoon import keys
from cocoon.meter.credits import FileCreditSource, credential_hash
from cocoon.meter.errors import MeterError, Reason
from cocoon.meter.pricing import Price
from cocoon.meter.process import write_credits
from cocoon.meter.sidecar import sidecar_spec, triton_listen_args
from cocoon.meter.usage_report import (
    UsageReport,
    UsageReportError,
    UsageUnits,
    sign,
    verify,
)


def test_file_source_reloads_on_change_and_keeps_last_good_table(tmp_path):
    path = tmp_path / "credits.json"
    write_credits(path, {"one": ("ns/a", 100)})
    source = FileCreditSource(path)
    assert source.lookup(credential_hash("one")).limit_nanoton == 100
    assert not source.reload()
    write_credits(path, {"one": ("ns/a", 500), "two": ("ns/b", 1)})
    assert source.reload()
    assert source.lookup(credential_hash("one")).limit_nanoton == 500
    assert source.lookup(credential_hash("two")).channel == "ns/b"
    path.write_text('{"channels": [{"channel": "BAD"}]}')
    os.utime(path, ns=(1, 1))
    assert not source.reload()
    assert source.lookup(credential_hash("two")) is not None


def test_credit_file_holds_no_credentials(tmp_path):
    path = tmp_path / "credits.json"
    write_credits(path, {"super-secret-credential": ("ns/a", 1)})
    assert "super-secret-credential" not in path.read_text()


def _report(key, **overrides):
    fields = dict(
        meter_public_key=keys.public_bytes(key).hex(), journal_id="0f" * 16, pool="ns/pool",
        channel="ns/chan",
        units=UsageUnits(requests=3, input_tokens=4, output_tokens=5),
        cost_nanoton="123456789012345678901", journal_sequence=9,
        issued_at="2026-01-01T00:00:00Z",
    )
    fields.update(overrides)
    return UsageReport.model_validate(fields)


def test_usage_report_signs_and_verifies_over_the_wire():
    key = keys.generate()
    signed = sign(_report(key), key)
    wire = json.dumps(signed.to_api())
    report = verify(wire, keys.public_bytes(key))
    assert report.cost_nanoton == "123456789012345678901"
    assert report.units.output_tokens == 5


def test_usage_report_rejects_tampering_and_other_keys():
    key, other = keys.generate(), keys.generate()
    envelope = sign(_report(key), key).to_api()
    tampered = json.loads(json.dumps(envelope))
    tampered["report"]["costNanoton"] = "1"
    with pytest.raises(UsageReportError, match="does not verify"):
        verify(tampered)
    with pytest.raises(UsageReportError, match="other than the attested"):
        verify(envelope, keys.public_bytes(other))
    with pytest.raises(UsageReportError, match="malformed"):
        verify({"report": envelope["report"], "signature": "***"})
    with pytest.raises(ValueError, match="signing key"):
        sign(_report(other), key)


def test_sidecar_spec_renders_meter_container():
    spec = sidecar_spec(
        image="ghcr.io/cocoon/meter:1", pool="ns/pool",
        price=Price(per_request="5", per_output_token="2"), models=["llm"],
    )
    assert spec["name"] == "meter"
    assert spec["args"][:2] == ["meter", "serve"]
    assert "--price-per-output-token=2" in spec["args"]
    assert "--model=llm" in spec["args"]
    assert {p["name"]: p["containerPort"] for p in spec["ports"]} == {
        "http": 8000, "grpc": 8001, "metrics": 9100}
    assert spec["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert spec["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
    assert spec["startupProbe"]["httpGet"] == spec["livenessProbe"]["httpGet"]
    mounts = {m["mountPath"] for m in spec["volumeMounts"]}
    assert "/var/lib/cocoon-meter" in mounts
    assert "--http-address=127.0.0.1" in triton_listen_args()
    upstream = next(a for a in spec["args"] if a.startswith("--upstream-http="))
    assert upstream.endswith(":18000")


def test_meter_error_body_is_kserve_compatible():
    body = json.loads(MeterError(Reason.NO_CREDIT, "top up").body())
    assert body == {"error": "InsufficientCredit: top up", "code": "InsufficientCredit",
                    "message": "top up"}


def test_sidecar_reads_the_tokenizer_from_the_model_repository_read_only():
    plain = sidecar_spec(image="m:1", pool="ns/p", price=Price(), models=["llm"])
    assert not any(a.startswith("--tokenizer") for a in plain["args"])
    assert "/models" not in {m["mountPath"] for m in plain["volumeMounts"]}
    spec = sidecar_spec(image="m:1", pool="ns/p", price=Price(), models=["llm"],
                        tokenizer="llm/tokenizer.json")
    assert "--tokenizer=/models/llm/tokenizer.json" in spec["args"]
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in spec["volumeMounts"]


def test_sidecar_carries_every_price_field():
    price = Price(per_request="1", per_input_token="2", per_output_token="3",
                  per_cached_input_token="4", per_reasoning_token="5", per_tokens=1000000)
    args = sidecar_spec(image="m:1", pool="ns/p", price=price, models=["llm"])["args"]
    assert set(price.cli_args()) <= set(args)
    assert "--price-per-reasoning-token=5" in args
