"""Where a node's evidence comes from: real hardware or the per-cluster simulated TEE.

A source is a plain `(nonce, public key) -> NodeEvidence` callable, so the loop neither knows
nor cares which one it runs with, and tests can pass their own.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cocoon.agent import collectors
from cocoon.agent.simulated import DEFAULT_MEASUREMENT, SimulatedTee
from cocoon.attestation import binding
from cocoon.attestation.evidence import NodeEvidence

EvidenceSource = Callable[[bytes, bytes], NodeEvidence]

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
) -> EvidenceSource:
    """Real-format evidence from the simulated TEE; the knobs make deliberately bad evidence."""

    def collect(nonce: bytes, public_key: bytes) -> NodeEvidence:
        return sim.node_evidence(
            nonce, public_key, gpus=gpus, debug=debug, measurement=measurement, tamper=tamper
        )

    return collect


def hardware(tsm_root: Path, *, gpus: bool = True) -> EvidenceSource:
    """configfs-tsm for the CPU and NVML for every GPU, both bound to this challenge and key.

    Fails at construction, not at the first challenge, when the node cannot produce evidence,
    so a misconfigured DaemonSet pod crashes with a message instead of idling.
    """
    if not tsm_root.is_dir():
        raise collectors.CollectorError(f"{TSM_MISSING} ({tsm_root} is missing)")
    if gpus:
        collectors.check_nvml()
    tsm = collectors.ConfigfsTsm(tsm_root)

    def collect(nonce: bytes, public_key: bytes) -> NodeEvidence:
        cpu = tsm.cpu_evidence(binding.cpu_report_data(nonce, public_key))
        devices = collectors.collect_gpus(binding.gpu_nonce(nonce, public_key)) if gpus else []
        return NodeEvidence(cpu, tuple(devices))

    return collect
