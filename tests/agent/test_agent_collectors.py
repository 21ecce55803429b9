"""Collectors on recorded formats: configfs-tsm emulated in a temp dir, NVML faked or absent."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from cocoon import keys
from cocoon.agent import collectors
from cocoon.agent.simulated import SimulatedTee
from cocoon.attestation import appraisal, binding
from cocoon.attestation.encoding import der
from cocoon.attestation.evidence import NodeEvidence
from cocoon.attestation.policy import Policy

NOW = 1766000000
SIM = SimulatedTee.generate(now=datetime.fromtimestamp(NOW, UTC))


class EmulatedTsm(collectors.ConfigfsTsm):
    """Plays the kernel: answers an inblob write with a simulated SNP report and cert table."""

    table = True

    def _write_inblob(self, entry: Path, inblob: bytes) -> None:
        super()._write_inblob(entry, inblob)
        (entry / "outblob").write_bytes(SIM.snp_report(inblob))
        table = {"vcek": der(SIM.vcek), "ask": der(SIM.ask), "ark": der(SIM.ark)}
        table = table if self.table else {}
        (entry / "auxblob").write_bytes(collectors.build_snp_cert_table(table))
        (entry / "provider").write_text("sev_guest\n")
        (entry / "generation").write_text("1\n")

    def _remove(self, entry: Path) -> None:
        for child in entry.iterdir():
            child.unlink()
        entry.rmdir()


def test_configfs_tsm_snp_round_trip(tmp_path: Path) -> None:
    nonce, key = os.urandom(32), keys.public_bytes(keys.generate())
    cpu = EmulatedTsm(tmp_path).cpu_evidence(binding.cpu_report_data(nonce, key))
    assert list(tmp_path.iterdir()) == []
    verdict = appraisal.appraise_node(
        NodeEvidence(cpu),
        Policy.from_spec(SIM.policy_spec(gpu={"required": False})),
        now=NOW,
        nonce=nonce,
        public_key=key,
    )
    assert verdict.verified, verdict.message


def test_a_host_without_a_cert_table_sends_the_bare_report(tmp_path: Path) -> None:
    """The operator then fetches the VCEK from KDS (tests/attestation/test_collateral.py)."""
    tsm = EmulatedTsm(tmp_path)
    tsm.table = False
    cpu = tsm.cpu_evidence(bytes(64))
    assert cpu.certificates == b"" and len(cpu.report) == 0x4A0


def test_cert_table_parse() -> None:
    table = collectors.build_snp_cert_table({"vcek": b"v" * 10, "ark": b"a" * 3})
    assert collectors.parse_snp_cert_table(table) == {"vcek": b"v" * 10, "ark": b"a" * 3}
    with pytest.raises(collectors.CollectorError):
        collectors.parse_snp_cert_table(table[:24] + table[24:48])


def test_missing_configfs_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(collectors.CollectorError, match="configfs-tsm"):
        collectors.ConfigfsTsm(tmp_path / "absent").report(b"x")


def test_nvml_absent_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "pynvml", None)
    with pytest.raises(collectors.CollectorError, match="no NVIDIA GPU / NVML unavailable"):
        collectors.collect_gpus(bytes(32))


def test_nvml_reports_are_collected() -> None:
    nonce = bytes(range(32))
    report, chain = SIM.gpu_report(nonce), SIM.gpu_certificates()
    calls: list[str] = []
    fake = SimpleNamespace(
        nvmlInit=lambda: calls.append("init"),
        nvmlShutdown=lambda: calls.append("shutdown"),
        nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetConfComputeGpuAttestationReport=lambda h, n: SimpleNamespace(
            attestationReport=list(report) + [0] * 16, attestationReportSize=len(report)
        ),
        nvmlDeviceGetConfComputeGpuCertificate=lambda h: SimpleNamespace(
            attestationCertChain=list(chain), attestationCertChainSize=len(chain)
        ),
    )
    gpus = collectors.collect_gpus(nonce, fake)
    assert [g.report for g in gpus] == [report, report]
    assert calls == ["init", "shutdown"]
