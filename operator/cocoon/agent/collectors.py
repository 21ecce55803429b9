"""Evidence collectors on a real node: Linux configfs-tsm for the CPU, NVML for the GPUs.

configfs-tsm (/sys/kernel/config/tsm/report) serves both TDX quotes and SNP reports: make an
entry, write inblob, read outblob/auxblob/provider, and compare `generation` to detect another
writer. NVML is imported lazily: most nodes (and CI) have no NVIDIA driver.
"""

from __future__ import annotations

import importlib
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from cocoon.attestation.encoding import pem
from cocoon.attestation.evidence import CpuEvidence, GpuEvidence
from cocoon.attestation.verdict import Tee

TSM_ROOT = Path("/sys/kernel/config/tsm/report")
_PROVIDERS = {"sev_guest": Tee.SNP, "tdx_guest": Tee.TDX}
SNP_CERT_GUIDS = {
    uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd"): "vcek",
    uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1"): "vlek",
    uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782"): "ask",
    uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae"): "ark",
}
_ENTRY = 24


class CollectorError(RuntimeError):
    """Evidence could not be collected on this node; the message says what is missing."""


@dataclass(frozen=True)
class TsmReport:
    provider: str
    outblob: bytes
    auxblob: bytes
    generation: int


class ConfigfsTsm:
    """One report per call through a fresh configfs-tsm entry, removed afterwards."""

    def __init__(self, root: Path = TSM_ROOT) -> None:
        self.root = root

    def report(self, inblob: bytes, *, privlevel: int | None = None) -> TsmReport:
        if not self.root.is_dir():
            raise CollectorError(
                f"{self.root} does not exist: the kernel lacks configfs-tsm (TSM_REPORTS) or "
                "configfs is not mounted, or this is not a confidential VM"
            )
        entry = self.root / f"cocoon-{secrets.token_hex(8)}"
        try:
            entry.mkdir()
            if privlevel is not None:
                (entry / "privlevel").write_text(str(privlevel))
            self._write_inblob(entry, inblob)
            generation = int((entry / "generation").read_text().strip())
            outblob = (entry / "outblob").read_bytes()
            aux = entry / "auxblob"
            auxblob = aux.read_bytes() if aux.exists() else b""
            provider = (entry / "provider").read_text().strip()
            if int((entry / "generation").read_text().strip()) != generation:
                raise CollectorError("another writer changed the configfs-tsm entry; retry")
        except OSError as exc:
            raise CollectorError(f"configfs-tsm failed at {entry}: {exc}") from exc
        finally:
            self._remove(entry)
        return TsmReport(provider, outblob, auxblob, generation)

    def _write_inblob(self, entry: Path, inblob: bytes) -> None:
        """The seam the kernel acts on; tests emulate the kernel by overriding it."""
        (entry / "inblob").write_bytes(inblob)

    def _remove(self, entry: Path) -> None:
        try:
            entry.rmdir()
        except OSError:
            return  # configfs removes the attributes with the directory; best effort

    def cpu_evidence(self, report_data: bytes) -> CpuEvidence:
        """TDX quote or SNP report (+ the certificates from the SNP certificate table; without
        them the operator fetches the VCEK from AMD KDS when its policy or chart names one)."""
        result = self.report(report_data)
        tee = _PROVIDERS.get(result.provider)
        if tee is None:
            raise CollectorError(f"unsupported configfs-tsm provider {result.provider!r}")
        if tee is Tee.TDX:
            return CpuEvidence(tee, result.outblob)
        table = parse_snp_cert_table(result.auxblob)
        key = table.get("vcek") or table.get("vlek")
        if key is None:
            return CpuEvidence(tee, result.outblob)
        chain = [x509.load_der_x509_certificate(key)]
        chain += [x509.load_der_x509_certificate(table[n]) for n in ("ask", "ark") if n in table]
        return CpuEvidence(tee, result.outblob, pem(chain))


def parse_snp_cert_table(aux: bytes) -> dict[str, bytes]:
    """GHCB certificate table: (GUID, offset, length) entries up to an all-zero one."""
    certs: dict[str, bytes] = {}
    for start in range(0, len(aux) - _ENTRY + 1, _ENTRY):
        guid = uuid.UUID(bytes_le=aux[start : start + 16])
        offset = int.from_bytes(aux[start + 16 : start + 20], "little")
        length = int.from_bytes(aux[start + 20 : start + 24], "little")
        if guid.int == 0:
            break
        if offset + length > len(aux):
            raise CollectorError(f"SNP certificate table entry {guid} points past the auxblob")
        name = SNP_CERT_GUIDS.get(guid)
        if name is not None:
            certs[name] = aux[offset : offset + length]
    return certs


def build_snp_cert_table(certs: dict[str, bytes]) -> bytes:
    """The inverse of `parse_snp_cert_table` (what the host puts in the auxblob)."""
    guids = {name: guid for guid, name in SNP_CERT_GUIDS.items()}
    header = _ENTRY * (len(certs) + 1)
    table, body = b"", b""
    for name, data in certs.items():
        offset = header + len(body)
        table += (
            guids[name].bytes_le + offset.to_bytes(4, "little") + len(data).to_bytes(4, "little")
        )
        body += data
    return table + bytes(_ENTRY) + body


def _nvml() -> Any:
    try:
        return importlib.import_module("pynvml")
    except ImportError:
        raise CollectorError(
            "no NVIDIA GPU / NVML unavailable: install nvidia-ml-py and the NVIDIA driver"
        ) from None


def check_nvml(nvml: Any = None) -> int:
    """How many GPUs NVML sees; a CollectorError with the cause when there is no usable GPU."""
    lib = nvml if nvml is not None else _nvml()
    try:
        lib.nvmlInit()
    except Exception as exc:
        raise CollectorError(f"no NVIDIA GPU / NVML unavailable: {exc}") from exc
    try:
        count = int(lib.nvmlDeviceGetCount())
    except Exception as exc:
        raise CollectorError(f"NVML could not count GPUs: {exc}") from exc
    finally:
        lib.nvmlShutdown()
    if count == 0:
        raise CollectorError("NVML reports no NVIDIA GPU on this node")
    return count


def collect_gpus(nonce: bytes, nvml: Any = None) -> list[GpuEvidence]:
    """Each GPU's confidential-computing attestation report for `nonce`, with its chain."""
    lib = nvml if nvml is not None else _nvml()
    try:
        lib.nvmlInit()
    except Exception as exc:
        raise CollectorError(f"no NVIDIA GPU / NVML unavailable: {exc}") from exc
    try:
        evidence = []
        for index in range(lib.nvmlDeviceGetCount()):
            handle = lib.nvmlDeviceGetHandleByIndex(index)
            report = lib.nvmlDeviceGetConfComputeGpuAttestationReport(handle, nonce)
            certs = lib.nvmlDeviceGetConfComputeGpuCertificate(handle)
            evidence.append(
                GpuEvidence(
                    bytes(report.attestationReport[: report.attestationReportSize]),
                    bytes(certs.attestationCertChain[: certs.attestationCertChainSize]),
                )
            )
        return evidence
    except Exception as exc:
        raise CollectorError(f"NVML could not produce GPU attestation evidence: {exc}") from exc
    finally:
        lib.nvmlShutdown()
