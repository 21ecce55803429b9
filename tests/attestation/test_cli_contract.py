"""`cocoon attest verify` without --policy: authenticity, binding and debug only; VMPL a claim."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from cocoon.agent.simulated import SimulatedTee
from cocoon.attestation import appraisal, cli
from cocoon.attestation.policy import Policy
from cocoon.cli import main

NOW = 1766000000
SIM = SimulatedTee.generate(now=datetime.fromtimestamp(NOW, UTC))


def test_default_policy_is_the_contract() -> None:
    policy = cli.load_policy(None)
    assert policy.snp.allowed_vmpls == {0, 1, 2, 3}
    assert not policy.allow_debug
    assert not policy.snp.measurements and not policy.snp.min_tcb
    assert not policy.gpu.require_rims and policy.gpu.min_driver is None
    assert Policy.default().snp.allowed_vmpls == {0}  # the CRD's documented default


@pytest.mark.parametrize("vmpl", [0, 1, 3])
def test_cli_default_accepts_any_vmpl_and_reports_it(vmpl: int) -> None:
    spec = SIM.policy_spec(**cli.DEFAULT_SPEC)  # the CLI default, plus trust in the test root
    report = SIM.snp_report(bytes(64), vmpl=vmpl)
    result = appraisal.appraise_snp(report, SIM.snp_certificates(), Policy.from_spec(spec), now=NOW)
    assert result.reason is None, result.message
    assert result.claims["vmpl"] == vmpl


@pytest.mark.parametrize(
    ("snp", "verified", "reason"),
    [
        ({}, False, "VmplNotAllowed"),  # a policy file gets the CRD default [0]
        ({"allowedVmpls": [0, 1]}, True, None),
    ],
)
def test_cli_with_policy_applies_allowed_vmpls(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    snp: dict[str, object],
    verified: bool,
    reason: str | None,
) -> None:
    (tmp_path / "report.bin").write_bytes(SIM.snp_report(bytes(64), vmpl=1))
    (tmp_path / "vcek.pem").write_bytes(SIM.snp_certificates())
    policy = SIM.policy_spec(snp=snp).to_api()
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump({"spec": policy}))
    code = main(
        ["attest", "verify", "snp", "--report", str(tmp_path / "report.bin"), "--vcek",
         str(tmp_path / "vcek.pem"), "--at", str(NOW), "--policy", str(tmp_path / "policy.yaml"),
         "--json"]
    )  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert (code, out["verified"], out["reason"]) == (0 if verified else 1, verified, reason)
    assert out["claims"]["vmpl"] == 1
