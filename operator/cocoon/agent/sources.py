"""Where a node's evidence comes from: real hardware or the per-cluster simulated TEE.

A bound source is a plain `report_data -> NodeEvidence` callable (every GPU's SPDM nonce is the
first 32 bytes of report_data). The node loop uses it through `for_node`, which binds the
operator's challenge and the node's workload key; the meter socket serves it directly for the
meters' own bindings. Neither knows which hardware it runs on, and tests can pass their own.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cocoon.agent import collectors
from cocoon.agent.simulated import DEFAULT_MEASUREMENT, SimulatedTee
from cocoon.attestation import binding
from cocoon.attestation.evidence import NodeEvidence
from cocoon.attestation.verdict import Tee

EvidenceSource = Callable[[bytes, bytes], NodeEvidence]
BoundSource = Callable[[bytes], NodeEvidence]

TSM_MISSING = (
    "configfs-tsm not available: this node is not a TDX/SNP guest or the kernel lacks TSM "
    "reports (Linux ≥ 6.7)"
)


def simulated(
    sim: SimulatedTee,
    *,
    gpus: int = 1,
    debug: bool = False,
    measurement: bytes = DEFAULT_MEASUREMENT,
    tamper: bool = False,
    tee: Tee = Tee.SNP,
) -> BoundSource:
    """Real-format evidence from the simulated TEE; the knobs make deliberately bad evidence."""

    def collect(report_data: bytes) -> NodeEvidence:
        return sim.bound_evidence(
            report_data, gpus=gpus, debug=debug, measurement=measurement, tamper=tamper, tee=tee
        )

    return collect


def for_node(source: BoundSource) -> EvidenceSource:
    """The node binding: evidence for SHA-512(challenge nonce || workload key)."""

    def collect(nonce: bytes, public_key: bytes) -> NodeEvidence:
        return source(binding.cpu_report_data(nonce, public_key))

    return collect


def hardware(tsm_root: Path, *, gpus: bool = True) -> BoundSource:
    """configfs-tsm for the CPU and NVML for every GPU, both bound to the same report_data.

    Fails at construction, not at the first challenge, when the node cannot produce evidence,
    so a misconfigured DaemonSet pod crashes with a message instead of idling.
    """
    if not tsm_root.is_dir():
        raise collectors.CollectorError(f"{TSM_MISSING} ({tsm_root} is missing)")
    if gpus:
        collectors.check_nvml()
    tsm = collectors.ConfigfsTsm(tsm_root)

    def collect(report_data: bytes) -> NodeEvidence:
        cpu = tsm.cpu_evidence(report_data)
        devices = (
            collectors.collect_gpus(report_data[: binding.GPU_NONCE_BYTES]) if gpus else []
        )
        return NodeEvidence(cpu, tuple(devices))

    return collect
