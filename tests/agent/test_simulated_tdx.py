"""The simulated TDX platform: real-format v4 quotes and PCCS collateral that the production
verifier (dcap-qvl) accepts only under a policy naming the cluster's simulated Intel root."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dcap_qvl
import pytest

from cocoon import keys
from cocoon.agent.simulated import SimulatedTee
from cocoon.agent.simulated_tdx import DEFAULT_MEASUREMENT
from cocoon.attestation import appraisal, binding
from cocoon.attestation.collateral import CollateralCache, CollateralSupplier, Sources
from cocoon.attestation.evidence import CpuEvidence, NodeEvidence
from cocoon.attestation.policy import Policy
from cocoon.attestation.verdict import Tee
from cocoon.devstack.pccs import serve

NOW = 1766000000
AT = datetime.fromtimestamp(NOW, UTC)
SIM = SimulatedTee.generate(now=AT).for_node("tdx-node")
assert SIM.tdx is not None
TDX = SIM.tdx
COLLATERAL = TDX.collateral(AT)
TRUSTING = Policy.from_spec(
    SIM.policy_spec(gpu={"required": False}, tdx={"mrTd": [DEFAULT_MEASUREMENT.hex()]})
)
NONCE, KEY = os.urandom(32), keys.public_bytes(keys.generate())
REPORT_DATA = binding.cpu_report_data(NONCE, KEY)


def appraise(quote: bytes, collateral: str | None = COLLATERAL, policy: Policy = TRUSTING,
             now: int = NOW) -> appraisal.DeviceResult:  # fmt: skip
    return appraisal.appraise_tdx(quote, collateral, policy, now=now, report_data=REPORT_DATA)


def test_the_quote_has_intels_v4_layout() -> None:
    quote = TDX.quote(REPORT_DATA)
    parsed = dcap_qvl.parse_quote(quote)
    assert parsed.is_tdx() and parsed.header.version == 4
    assert bytes(parsed.report.report_data) == REPORT_DATA
    assert bytes(parsed.report.mr_td) == DEFAULT_MEASUREMENT
    assert dcap_qvl.Quote.parse(quote).ca() == "platform"


def test_verifies_through_dcap_qvl_under_a_policy_naming_the_root() -> None:
    result = appraise(TDX.quote(REPORT_DATA))
    assert result.reason is None, result.message
    assert result.claims["root"] == "simulated-intel" and result.claims["simulated"] is True
    assert result.claims["tcbStatus"] == "UpToDate"
    assert result.claims["mrTd"] == DEFAULT_MEASUREMENT.hex()


def test_the_default_policy_refuses_it() -> None:
    result = appraise(TDX.quote(REPORT_DATA), policy=Policy.default())
    assert result.reason == "UntrustedRoot"
    assert "allowSimulated" in result.message


def test_another_clusters_look_alike_root_is_refused() -> None:
    other = SimulatedTee.generate(now=AT).for_node("tdx-node")
    assert other.tdx is not None
    # same names, other keys: the anchor is picked by name, and dcap-qvl refuses the chain
    result = appraise(other.tdx.quote(REPORT_DATA), collateral=other.tdx.collateral(AT))
    assert result.reason == "BadCertificateChain"
    mixed = appraise(TDX.quote(REPORT_DATA), collateral=other.tdx.collateral(AT))
    assert mixed.reason == "BadCertificateChain"


@pytest.mark.parametrize(
    ("knobs", "reason"),
    [
        ({"tamper": True}, "BadSignature"),
        ({"mr_td": bytes(48)}, "MrTdMismatch"),
        ({"debug": True}, "DebugEnabled"),
    ],
)
def test_bad_quotes_are_refused(knobs: dict[str, object], reason: str) -> None:
    result = appraise(TDX.quote(REPORT_DATA, **knobs))  # type: ignore[arg-type]
    assert result.reason == reason, result.message


def test_binding_and_collateral_time() -> None:
    assert appraise(TDX.quote(bytes(64))).reason == "ReportDataMismatch"
    expired = int((AT + timedelta(days=31)).timestamp())
    assert appraise(TDX.quote(REPORT_DATA), now=expired).reason == "CollateralExpired"
    assert appraise(TDX.quote(REPORT_DATA), collateral=None).reason == "CollateralMissing"


async def test_the_operator_fetches_it_from_the_pccs_stand_in(tmp_path: Path) -> None:
    evidence = SIM.bound_evidence(REPORT_DATA, gpus=0, tee=Tee.TDX)
    assert evidence.cpu.tee is Tee.TDX and evidence.cpu.collateral is None  # as configfs-tsm
    with serve(COLLATERAL) as pccs:
        supplier = CollateralSupplier(CollateralCache(tmp_path))
        supplied = await supplier.supply(evidence, Sources(pccs_url=pccs.url), NOW)
        assert len(pccs.requests) == 4
    verdict = appraisal.appraise_node(supplied, TRUSTING, now=NOW, nonce=NONCE, public_key=KEY)
    assert verdict.verified, verdict.message


def test_saved_and_loaded_with_the_rest_of_the_simulated_tee(tmp_path: Path) -> None:
    SIM.save(tmp_path / "sim")
    loaded = SimulatedTee.load(tmp_path / "sim").for_node("tdx-node")
    assert loaded.tdx is not None
    assert loaded.tdx.root == TDX.root
    evidence = NodeEvidence(CpuEvidence(Tee.TDX, loaded.tdx.quote(REPORT_DATA), b"", COLLATERAL))
    verdict = appraisal.appraise_node(evidence, TRUSTING, now=NOW, nonce=NONCE, public_key=KEY)
    assert verdict.verified, verdict.message
