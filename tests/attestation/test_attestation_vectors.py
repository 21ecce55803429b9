"""Every MANIFEST row gives its expected result at its `at` time, via the library and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from attestation_vectors import (
    DATA,
    DEFAULT,
    GPU_535_AT,
    GPU_550_AT,
    SNP_AT,
    TDX_AT,
    TDX_OUTDATED_AT,
    read,
)

from cocoon.attestation import appraisal, encoding
from cocoon.cli import main

# (cli args, verified, reason, claims that must hold)
CASES = [
    pytest.param(
        ["tdx", "--quote", "tdx/tdx_quote.bin", "--collateral", "tdx/tdx_quote.collateral.json",
         "--at", str(TDX_AT)],
        True, None,
        {"tcbStatus": "UpToDate", "advisoryIds": [], "version": 4, "debug": False,
         "mrTd": "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f"
                 "27428b2538873118b7",
         "rtmr3": "00" * 48},
        id="tdx-uptodate",
    ),
    pytest.param(
        ["tdx", "--quote", "tdx/tdx_quote_outdated.bin", "--collateral",
         "tdx/tdx_quote_outdated.collateral.json", "--at", str(TDX_OUTDATED_AT)],
        False, "NoMatchingTcbLevel", {},
        id="tdx-outdated",
    ),
    pytest.param(
        ["snp", "--report", "snp/milan_report.hex", "--vcek", "snp/milan_vcek.der",
         "--at", str(SNP_AT)],
        True, None,
        {"product": "Milan", "signingKey": "vcek", "version": 2, "policy": "0x30000",
         "debug": False, "vmpl": 0,
         "reportedTcb": {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}},
        id="snp-milan",
    ),
    pytest.param(
        ["snp", "--report", "snp/milan_report.hex", "--vcek", "snp/milan_vcek.der",
         "--chain", "snp/milan_ask_ark.pem", "--at", str(SNP_AT)],
        True, None, {"root": "AmdArkMilan"},
        id="snp-milan-explicit-chain",
    ),
    pytest.param(
        ["snp", "--report", "snp/milan_debug_report.bin", "--vcek", "snp/milan_debug_vcek.der",
         "--at", str(SNP_AT)],
        False, "DebugEnabled", {"debug": True, "policy": "0xb0000"},
        id="snp-debug",
    ),
    pytest.param(
        ["nvgpu", "--evidence", "nvgpu/h100_550_report.hex", "--chain",
         "nvgpu/h100_550_chain.pem", "--at", str(GPU_550_AT)],
        True, None,
        {"driverVersion": "550.90.07", "vbiosVersion": "96.00.9f.00.01", "fwidBound": True,
         "nonce": "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"},
        id="gpu-550",
    ),
    pytest.param(
        ["nvgpu", "--evidence", "nvgpu/b200_575_report.hex", "--chain",
         "nvgpu/b200_575_chain.pem", "--at", "1766000000", "--nonce",
         "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"],
        True, None,
        {"driverVersion": "575.32", "vbiosVersion": "97.00.88.00.0f", "fwidBound": True,
         "hwModel": "GB100 A01 GSP BROM"},
        id="gpu-b200",
    ),
    pytest.param(
        ["nvgpu", "--evidence", "nvgpu/h100_535_report.hex", "--chain",
         "nvgpu/h100_535_chain.pem", "--rim", "nvgpu/h100_535_vbios_rim.swidtag",
         "--at", str(GPU_535_AT)],
        True, None,
        {"driverVersion": "535.86.09", "vbiosVersion": "96.00.5e.00.01",
         "rims": ["vbios 96.00.5E.00.01"]},
        id="gpu-535-with-rim",
    ),
    pytest.param(
        ["nvgpu", "--evidence", "nvgpu/h100_invalid_signature_report.hex", "--chain",
         "nvgpu/h100_535_chain.pem", "--at", str(GPU_535_AT)],
        False, "BadSignature", {},
        id="gpu-invalid-signature",
    ),
    pytest.param(
        ["nvgpu", "--evidence", "nvgpu/h100_535_report.hex", "--chain",
         "nvgpu/h100_535_chain.pem", "--rim", "nvgpu/h100_535_vbios_rim_mismatch.xml",
         "--at", str(GPU_535_AT)],
        False, "MeasurementMismatch", {},
        id="gpu-rim-mismatch",
    ),
]  # fmt: skip


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object]]:
    resolved = [str(DATA / a) if (DATA / a).is_file() else a for a in args]
    code = main(["attest", "verify", *resolved, "--json"])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(("args", "verified", "reason", "claims"), CASES)
def test_manifest_row_via_cli(
    args: list[str],
    verified: bool,
    reason: str | None,
    claims: dict[str, object],
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = _cli(args, capsys)
    assert code == (0 if verified else 1)
    assert out["verified"] is verified
    assert out["reason"] == reason
    assert out["tee"] == args[0]
    for key, value in claims.items():
        assert out["claims"][key] == value  # type: ignore[index]


def test_tdx_via_library() -> None:
    result = appraisal.appraise_tdx(
        read("tdx/tdx_quote.bin"), read("tdx/tdx_quote.collateral.json").decode(), DEFAULT,
        now=TDX_AT,
    )  # fmt: skip
    assert result.reason is None
    assert str(result.claims["reportData"]).startswith("9a9d48e7f6799642")
    outdated = appraisal.appraise_tdx(
        read("tdx/tdx_quote_outdated.bin"),
        read("tdx/tdx_quote_outdated.collateral.json").decode(),
        DEFAULT,
        now=TDX_OUTDATED_AT,
    )
    assert outdated.reason == "NoMatchingTcbLevel"
    assert "No matching TCB level found" in outdated.message


def test_snp_via_library_binds_chip_id() -> None:
    report = encoding.decode_blob(read("snp/milan_report.hex"))
    result = appraisal.appraise_snp(report, read("snp/milan_vcek.der"), DEFAULT, now=SNP_AT)
    assert result.reason is None
    assert result.claims["chipId"] == report[0x1A0:0x1E0].hex()


def test_snp_debug_report_is_authentic_but_rejected() -> None:
    report = read("snp/milan_debug_report.bin")
    result = appraisal.appraise_snp(report, read("snp/milan_debug_vcek.der"), DEFAULT, now=SNP_AT)
    assert [f.reason for f in result.failures] == ["DebugEnabled"]
    assert str(result.claims["reportData"]).startswith("0102030405")


def test_snp_debug_allowed_only_when_policy_says_so() -> None:
    from cocoon.api.attestationpolicy import AttestationPolicySpec
    from cocoon.attestation.policy import Policy

    policy = Policy.from_spec(AttestationPolicySpec(allow_debug=True))
    result = appraisal.appraise_snp(
        read("snp/milan_debug_report.bin"), read("snp/milan_debug_vcek.der"), policy, now=SNP_AT
    )
    assert result.reason is None


def test_gpu_via_library_reads_nonce_from_request() -> None:
    report = encoding.decode_blob(read("nvgpu/h100_550_report.hex"))
    nonce = bytes.fromhex("931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb")
    ok = appraisal.appraise_gpu(
        report, read("nvgpu/h100_550_chain.pem"), DEFAULT, now=GPU_550_AT, nonce=nonce
    )
    assert ok.reason is None
    wrong = appraisal.appraise_gpu(
        report, read("nvgpu/h100_550_chain.pem"), DEFAULT, now=GPU_550_AT, nonce=bytes(32)
    )
    assert wrong.reason == "NonceMismatch"


def test_driver_rim_signature_verifies_at_its_time() -> None:
    rims = appraisal.verify_rims([read("nvgpu/driver_rim_550.144.03.xml")], DEFAULT, GPU_550_AT)
    assert not rims.refused
    (manifest,) = rims.verified
    assert (manifest.kind, manifest.version) == ("driver", "550.144.03")
    assert manifest.measurements


def test_cli_subprocess_human_output() -> None:
    cocoon = Path(sys.executable).parent / "cocoon"
    run = subprocess.run(
        [str(cocoon), "attest", "verify", "snp", "--report", str(DATA / "snp/milan_report.hex"),
         "--vcek", str(DATA / "snp/milan_vcek.der"), "--at", str(SNP_AT)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert lines[0].startswith("cpu0 snp: affirming")
    assert lines[-1] == "verdict: VERIFIED"


def test_nvidia_json_evidence_without_nonce_reports_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = encoding.NvidiaJsonEntry(
        "HOPPER",
        read("nvgpu/h100_550_chain.pem"),
        encoding.decode_blob(read("nvgpu/h100_550_report.hex")),
        None,
    )
    path = tmp_path / "evidence.json"
    path.write_bytes(encoding.nvidia_json([entry, entry]))
    code, out = _cli(["nvgpu", "--evidence", str(path), "--at", str(GPU_550_AT)], capsys)
    assert code == 0
    devices = out["devices"]
    assert isinstance(devices, list) and len(devices) == 2
    assert devices[1]["claims"]["nonce"].startswith("931d8dd0")


@pytest.mark.parametrize(
    "args",
    [
        ["snp", "--report", "/nonexistent", "--vcek", "snp/milan_vcek.der", "--at", "1"],
        ["snp", "--report", "snp/milan_report.hex", "--vcek", "snp/milan_vcek.der", "--at", "1",
         "--report-data", "zz"],
        ["nvgpu", "--evidence", "nvgpu/h100_550_report.hex", "--at", "1"],
    ],
)  # fmt: skip
def test_unreadable_input_exits_2(args: list[str]) -> None:
    resolved = [str(DATA / a) if (DATA / a).is_file() else a for a in args]
    assert main(["attest", "verify", *resolved]) == 2


def test_bad_usage_exits_2() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["attest", "verify", "snp", "--report", "x"])
    assert exc.value.code == 2
