"""Table-driven policy checks, the spec → policy converter and the CRD model's validation."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from attestation_vectors import SNP_AT, read
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from pydantic import ValidationError

from cocoon.api.attestationpolicy import AttestationPolicySpec, ExtraRoot
from cocoon.attestation import appraisal, encoding, snp
from cocoon.attestation.chain import check_revocation
from cocoon.attestation.enums import Revocation, RootPurpose
from cocoon.attestation.policy import Policy, PolicyError
from cocoon.attestation.roots import TrustStore
from cocoon.attestation.verdict import Rejected

AUTHENTIC = snp.verify(
    encoding.decode_blob(read("snp/milan_report.hex")),
    encoding.load_certificates(read("snp/milan_vcek.der"))[0],
    None,
    TrustStore.build(),
    datetime.fromtimestamp(SNP_AT, UTC),
)
MEASUREMENT = AUTHENTIC.report.measurement.hex()


def _policy(**spec: object) -> Policy:
    return Policy.from_spec(AttestationPolicySpec.model_validate(spec))


@pytest.mark.parametrize(
    ("check", "spec", "expected"),
    [
        (appraisal.snp_allowed, {}, None),
        (appraisal.snp_allowed, {"allowedTees": ["tdx"]}, "TeeNotAllowed"),
        (appraisal.snp_not_debug, {}, None),
        (appraisal.snp_vmpl, {}, None),
        (appraisal.snp_vmpl, {"snp": {"allowedVmpls": [1, 2]}}, "VmplNotAllowed"),
        (appraisal.snp_measurement, {}, None),
        (appraisal.snp_measurement, {"snp": {"measurements": [MEASUREMENT]}}, None),
        (appraisal.snp_measurement, {"snp": {"measurements": ["00" * 48]}}, "MeasurementMismatch"),
        (appraisal.snp_min_tcb, {"snp": {"minReportedTcb": {"snp": 8, "microcode": 115}}}, None),
        (appraisal.snp_min_tcb, {"snp": {"minReportedTcb": {"microcode": 116}}}, "TcbTooOld"),
        (appraisal.snp_min_tcb, {"snp": {"minReportedTcb": {"bootloader": 4}}}, "TcbTooOld"),
        (appraisal.snp_signing_key, {"snp": {"allowVlek": False}}, None),
    ],
)  # fmt: skip
def test_snp_checks(check: appraisal.Check[snp.AuthenticSnp], spec: dict[str, object],
                    expected: str | None) -> None:  # fmt: skip
    failure = check(AUTHENTIC, _policy(**spec), appraisal.Expectations())
    assert (failure.reason if failure else None) == expected


@pytest.mark.parametrize(
    ("report_data", "expected"),
    [(None, None), (AUTHENTIC.report.report_data, None), (bytes(64), "ReportDataMismatch")],
)
def test_report_data_check(report_data: bytes | None, expected: str | None) -> None:
    failure = appraisal.snp_report_data(
        AUTHENTIC, Policy.default(), appraisal.Expectations(report_data=report_data)
    )
    assert (failure.reason if failure else None) == expected


def test_debug_check_follows_policy() -> None:
    debug = replace(AUTHENTIC, report=replace(AUTHENTIC.report, policy=0xB0000))
    assert appraisal.snp_not_debug(debug, Policy.default(), appraisal.Expectations())
    assert not appraisal.snp_not_debug(debug, _policy(allowDebug=True), appraisal.Expectations())


def test_vlek_check() -> None:
    vlek = replace(AUTHENTIC, signing_key="vlek")
    assert appraisal.snp_signing_key(vlek, _policy(snp={"allowVlek": False}),
                                     appraisal.Expectations())  # fmt: skip
    assert not appraisal.snp_signing_key(vlek, Policy.default(), appraisal.Expectations())


@pytest.mark.parametrize(
    "spec",
    [
        {"tdx": {"mrTd": ["abc"]}},
        {"snp": {"allowedVmpls": [4]}},
        {"gpu": {"minDriverVersion": "five"}},
        {"verdictLifetimeSeconds": 60, "reattestIntervalSeconds": 60},
        {"trustedRoots": {"extraRoots": [{"name": "x", "purpose": "AmdArk", "sha256": "00" * 32}]}},
        {"allowedTees": []},
    ],
)  # fmt: skip
def test_invalid_specs_are_refused(spec: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        AttestationPolicySpec.model_validate(spec)


def test_every_field_has_a_description() -> None:
    def walk(schema: dict[str, object], defs: dict[str, object]) -> None:
        for name, prop in dict(schema.get("properties", {})).items():  # type: ignore[call-overload]
            assert prop.get("description"), name
        for sub in defs.values():
            if isinstance(sub, dict) and "properties" in sub:
                for name, prop in sub["properties"].items():
                    assert prop.get("description"), name

    schema = AttestationPolicySpec.model_json_schema(by_alias=True)
    walk(schema, schema.get("$defs", {}))


def test_production_default_never_trusts_simulated_or_extra_roots() -> None:
    spec = AttestationPolicySpec()
    assert spec.allow_debug is False
    assert spec.trusted_roots.allow_simulated is False
    assert spec.trusted_roots.extra_roots == []
    assert all(not a.simulated for a in Policy.default().trust.anchors)


def test_extra_root_must_match_its_pin() -> None:
    pem = read("roots/nvidia_device_identity_ca.pem").decode()
    root = ExtraRoot(name="n", purpose=RootPurpose.AMD_ARK, sha256="00" * 32, pem=pem)
    spec = AttestationPolicySpec(trusted_roots={"extraRoots": [root.to_api()]})
    with pytest.raises(PolicyError, match="not the pinned"):
        Policy.from_spec(spec)


def test_config_map_refs_need_a_resolver() -> None:
    spec = AttestationPolicySpec.model_validate({"gpu": {"rims": [{"name": "rims", "key": "a"}]}})
    with pytest.raises(PolicyError):
        Policy.from_spec(spec)
    rim = read("nvgpu/h100_535_vbios_rim.swidtag")
    policy = Policy.from_spec(spec, lambda ref: {"a": rim}[ref.key])
    assert policy.gpu.rims == (rim,)


def _crl(issuer_key: object, issuer: x509.Certificate, revoked: list[int], at: datetime) -> (
    x509.CertificateRevocationList
):  # fmt: skip
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(at - timedelta(hours=1))
        .next_update(at + timedelta(days=1))
    )
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(at).build()
        )
    return builder.sign(issuer_key, hashes.SHA384())  # type: ignore[arg-type]


def test_revocation_stance() -> None:
    from cocoon.agent.simulated import SimulatedTee

    at = datetime.fromtimestamp(SNP_AT, UTC)
    sim = SimulatedTee.generate(now=at)
    path = [sim.vcek, sim.ask, sim.ark]
    assert check_revocation(path, [], at, Revocation.ACCEPT_UNKNOWN, "VCEK") == "unknown"
    with pytest.raises(Rejected) as unknown:
        check_revocation(path, [], at, Revocation.REQUIRE_FRESH_CRL, "VCEK")
    assert unknown.value.failure.reason == "RevocationUnknown"
    revoked = _crl(sim.ark_key, sim.ark, [sim.ask.serial_number], at)
    with pytest.raises(Rejected) as exc:
        check_revocation(path, [revoked], at, Revocation.ACCEPT_UNKNOWN, "VCEK")
    assert exc.value.failure.reason == "CertificateRevoked"
