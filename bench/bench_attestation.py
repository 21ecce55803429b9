"""Verification time per evidence type on the real vectors, and a whole node (1 CPU + 8 GPUs).

The whole node is the real TDX quote plus eight distinct GPUs, each with a driver and a VBIOS
RIM whose every golden value is compared: public evidence holds no eight-GPU machine, so the GPUs
and RIMs come from the simulated TEE (same SPDM format, chain depth, P-384 signatures and XML-DSig
as NVIDIA's), each GPU with its own attestation key. RIM verification is cached by digest, as in
the operator, so the steady state is what a fleet's re-attestations cost. Run on one core:
`taskset -c 0 .venv/bin/python bench/bench_attestation.py`.

Run: .venv/bin/python bench/bench_attestation.py  → prints a table, writes
bench/results/attestation.json.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cocoon.agent.simulated import SimulatedTee
from cocoon.agent.simulated_gpu import simulated_gpu_measurement
from cocoon.agent.simulated_rim import SimulatedRimSigner
from cocoon.api.attestationpolicy import TrustedRoots
from cocoon.attestation import appraisal, encoding
from cocoon.attestation import rim as rim_lib
from cocoon.attestation.evidence import CpuEvidence, GpuEvidence, NodeEvidence
from cocoon.attestation.policy import Policy
from cocoon.attestation.verdict import Tee

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "attestation"
OUT = ROOT / "bench" / "results" / "attestation.json"
POLICY = Policy.default()


def _read(name: str) -> bytes:
    return (DATA / name).read_bytes()


def _time(fn: Callable[[], object], repeat: int) -> dict[str, float]:
    """Wall time and this process's CPU time: on a shared machine the CPU time is the figure
    that says what one core spends."""
    fn()
    samples, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    return {
        "median_ms": round(statistics.median(samples), 3),
        "p95_ms": round(sorted(samples)[int(len(samples) * 0.95) - 1], 3),
        "cpu_median_ms": round(statistics.median(cpu), 3),
        "runs": repeat,
    }


def whole_node_and_policy(quote: bytes, collateral: str, at: int) -> tuple[NodeEvidence, Policy]:
    """The real TDX quote plus 8 distinct simulated GPUs, and a policy trusting the simulated
    roots that requires signed RIMs for the driver and the VBIOS: a whole node to appraise."""
    sim = SimulatedTee.generate(now=datetime.fromtimestamp(at, UTC))
    signer = SimulatedRimSigner.generate(now=datetime.fromtimestamp(at, UTC))
    golden = {i: simulated_gpu_measurement(i) for i in range(1, 65)}
    rims = {
        "driver": signer.rim("driver", "550.90.07", {i: golden[i] for i in range(1, 33)}),
        "vbios": signer.rim("vbios", "96.00.9f.00.01", {i: golden[i] for i in range(33, 65)}),
    }
    roots = TrustedRoots(
        extra_roots=[*sim.extra_roots(), signer.extra_root()], allow_simulated=True
    )
    policy = Policy.from_spec(
        sim.policy_spec(
            allowedTees=["tdx", "sev-snp"],
            trustedRoots=roots.to_api(),
            gpu={
                "requireRims": True,
                "minCount": 8,
                "rims": [{"name": "rims", "key": k} for k in rims],
            },
        ),
        lambda ref: rims[ref.key],
    )
    node = NodeEvidence(
        CpuEvidence(Tee.TDX, quote, collateral=collateral),
        tuple(
            GpuEvidence(sim.gpu_report(bytes(32), index=i), sim.gpu_certificates(i))
            for i in range(8)
        ),
    )
    return node, policy


def main() -> None:
    quote = _read("tdx/tdx_quote.bin")
    collateral = _read("tdx/tdx_quote.collateral.json").decode()
    snp_report = encoding.decode_blob(_read("snp/milan_report.hex"))
    vcek = _read("snp/milan_vcek.der")
    gpu = encoding.decode_blob(_read("nvgpu/h100_535_report.hex"))
    chain = _read("nvgpu/h100_535_chain.pem")
    rim = _read("nvgpu/h100_535_vbios_rim.swidtag")
    tdx_at, snp_at, gpu_at = 1752919234, 1766000000, 1718000000

    def tdx() -> None:
        assert appraisal.appraise_tdx(quote, collateral, POLICY, now=tdx_at).reason is None

    def snp() -> None:
        assert appraisal.appraise_snp(snp_report, vcek, POLICY, now=snp_at).reason is None

    def nvgpu() -> None:
        assert appraisal.appraise_gpu(gpu, chain, POLICY, now=gpu_at).reason is None

    def rim_check() -> None:  # uncached: the cost of the first appraisal that meets a RIM
        assert rim_lib.verify(rim, POLICY.trust, datetime.fromtimestamp(gpu_at, UTC))

    node, node_policy = whole_node_and_policy(quote, collateral, tdx_at)

    def whole_node() -> None:
        cpu = appraisal.appraise_cpu(node.cpu, node_policy, now=tdx_at, report_data=None)
        gpus = appraisal.appraise_gpus(node.gpus, node_policy, now=tdx_at, nonce=None)
        assert cpu.reason is None and all(d.reason is None for d in gpus)
        assert all(len(d.claims["rims"]) == 2 for d in gpus)  # type: ignore[arg-type]
        assert appraisal.duplicate_gpus(gpus) is None

    results = {
        "tdx_quote": _time(tdx, 200),
        "snp_report": _time(snp, 200),
        "nvgpu_report": _time(nvgpu, 200),
        "nvgpu_rim": _time(rim_check, 100),
        "node_1cpu_8gpu": _time(whole_node, 30),
    }
    print(f"{'evidence':<16} {'median ms':>10} {'p95 ms':>10} {'cpu ms':>8} {'runs':>6}")
    for name, r in results.items():
        print(
            f"{name:<16} {r['median_ms']:>10.3f} {r['p95_ms']:>10.3f} "
            f"{r['cpu_median_ms']:>8.3f} {r['runs']:>6}"
        )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "python": platform.python_version(),
                "machine": platform.machine(),
                "note": "whole node = 1 real TDX quote + 8 distinct simulated H100-format GPUs "
                "(own attestation keys), each against a driver and a VBIOS RIM (64 golden values, "
                "RIM verification cached by digest), chain, signature and distinctness checks; "
                "all verified",
                "cpu_affinity": sorted(os.sched_getaffinity(0)),
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
