"""`cocoon client policy init`, `cocoon call` and `cocoon client receipts` end to end against
the real TLS meter stand-in, through `cocoon.cli.main` as a user runs them."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from cocoon.agent.simulated import DEFAULT_MEASUREMENT, SimulatedTee
from cocoon.cli import main

from .conftest import MeterFactory
from .fakemeter import CREDENTIAL

PROMPT = "tell nobody 51c2"


def _roots(sim: SimulatedTee, tmp_path: Path) -> list[str]:
    args = []
    for purpose, cert in (("AmdArk", sim.ark), ("NvidiaDeviceIdentity", sim.gpu_root)):
        path = tmp_path / f"{purpose}.pem"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        args += ["--root", f"{purpose}={path}"]
    return args


@pytest.fixture
def pinned_policy(sim: SimulatedTee, meter_at: MeterFactory, tmp_path: Path) -> Path:
    _, url = meter_at()
    out = tmp_path / "mine.yaml"
    rc = main(["client", "policy", "init", "--url", url, "-o", str(out), "--allow-simulated",
               *_roots(sim, tmp_path)])
    assert rc == 0
    return out


def test_policy_init_pins_what_the_endpoint_measured(pinned_policy: Path) -> None:
    spec = yaml.safe_load(pinned_policy.read_text())
    assert spec["snp"]["measurements"] == [DEFAULT_MEASUREMENT.hex()]
    assert spec["gpu"] == {"required": True, "minCount": 1, "minDriverVersion": "550.90.07",
                           "minVbiosVersion": "96.00.9f.00.01", "rims": [],
                           "requireRims": False, "allowedModes": []}
    assert "NOT known-good" in pinned_policy.read_text()


def test_policy_init_refuses_an_untrusted_root(
    meter_at: MeterFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, url = meter_at()
    out = tmp_path / "p.yaml"
    assert main(["client", "policy", "init", "--url", url, "-o", str(out)]) == 3
    assert not out.exists()
    assert "refused" in capsys.readouterr().err


@pytest.mark.parametrize("endpoint", ["generate", "generate_stream"])
def test_call_verifies_then_answers_with_a_receipt(
    pinned_policy: Path, meter_at: MeterFactory, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], endpoint: str,
) -> None:
    meter, url = meter_at()
    db = tmp_path / "r.db"
    rc = main(["call", url, "--policy", str(pinned_policy), "--model", "llm", "--endpoint",
               endpoint, "--text", PROMPT, "--credential", CREDENTIAL, "--receipts", str(db)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert ("echo: " + PROMPT if endpoint == "generate" else "onetwothree") in out
    assert "verified 127.0.0.1" in err and "(unverified)" in err
    assert f"total {meter.charged['tenant/alpha']} nanoton" in err
    assert CREDENTIAL not in out + err
    assert main(["client", "receipts", "verify", "--receipts", str(db)]) == 0
    assert main(["client", "receipts", "list", "--receipts", str(db)]) == 0
    assert "tenant/alpha" in capsys.readouterr().out


def test_call_refuses_an_unlisted_measurement_and_sends_nothing(
    pinned_policy: Path, meter_at: MeterFactory, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    meter, url = meter_at(measurement=bytes(48))
    rc = main(["call", url, "--policy", str(pinned_policy), "--model", "llm", "--text", PROMPT,
               "--credential", CREDENTIAL, "--receipts", str(tmp_path / "r.db")])
    assert rc == 3
    assert "MeasurementMismatch" in capsys.readouterr().err
    assert meter.posts() == []


def test_receipts_verify_catches_a_stored_receipt_altered_later(
    pinned_policy: Path, meter_at: MeterFactory, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, url = meter_at()
    db = tmp_path / "r.db"
    assert main(["call", url, "--policy", str(pinned_policy), "--model", "llm", "--text",
                 PROMPT, "--credential", CREDENTIAL, "--receipts", str(db)]) == 0
    with sqlite3.connect(db) as conn:
        (signed,) = conn.execute("SELECT signed FROM receipts").fetchone()
        conn.execute("UPDATE receipts SET signed = ?",
                     (signed.replace('"costNanoton":"1300"', '"costNanoton":"1301"'),))
    capsys.readouterr()
    assert main(["client", "receipts", "verify", "--receipts", str(db)]) == 1
    assert "does not verify" in capsys.readouterr().out


def test_call_without_credential_is_a_usage_error(
    pinned_policy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COCOON_CREDENTIAL", raising=False)
    assert main(["call", "https://127.0.0.1:1", "--policy", str(pinned_policy), "--model", "m",
                 "--text", "x"]) == 2


def test_call_to_nothing_listening_says_so(
    pinned_policy: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    rc = main(["call", f"https://127.0.0.1:{port}", "--policy", str(pinned_policy), "--model",
               "m", "--text", "x", "--credential", "c", "--receipts", str(tmp_path / "r.db")])
    assert rc == 1
    assert "cannot reach" in capsys.readouterr().err
