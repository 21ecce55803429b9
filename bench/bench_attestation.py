"""Verification time per evidence type on the real vectors, and a whole node (1 CPU + 8 GPUs).

The whole node is the real TDX quote plus eight distinct GPUs: public evidence holds no
eight-GPU machine, so the GPUs come from the simulated TEE (same SPDM format, chain depth and
P-384 signatures as an H100), each with its own attestation key.

Run: .venv/bin/python bench/bench_attestation.py  → prints a table, writes
bench/results/attestation.json.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cocoon.agent.simulated import SimulatedTee
from cocoon.attestation import appraisal, encoding
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
    fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return {
        "median_ms": round(statistics.median(samples), 3),
        "p95_ms": round(sorted(samples)[int(len(samples) * 0.95) - 1], 3),
        "runs": repeat,
    }


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

    def rim_check() -> None:
        assert appraisal.verify_rims([rim], POLICY, gpu_at).verified

    sim = SimulatedTee.generate(now=datetime.fromtimestamp(tdx_at, UTC))
    node_policy = Policy.from_spec(sim.policy_spec(allowedTees=["tdx", "sev-snp"]))
    node = NodeEvidence(
        CpuEvidence(Tee.TDX, quote, collateral=collateral),
        tuple(
            GpuEvidence(sim.gpu_report(bytes(32), index=i), sim.gpu_certificates(i))
            for i in range(8)
        ),
    )

    def whole_node() -> None:
        cpu = appraisal.appraise_cpu(node.cpu, node_policy, now=tdx_at, report_data=None)
        gpus = appraisal.appraise_gpus(node.gpus, node_policy, now=tdx_at, nonce=None)
        assert cpu.reason is None and all(d.reason is None for d in gpus)
        assert appraisal.duplicate_gpus(gpus) is None

    results = {
        "tdx_quote": _time(tdx, 200),
        "snp_report": _time(snp, 200),
        "nvgpu_report": _time(nvgpu, 200),
        "nvgpu_rim": _time(rim_check, 100),
        "node_1cpu_8gpu": _time(whole_node, 30),
    }
    print(f"{'evidence':<16} {'median ms':>10} {'p95 ms':>10} {'runs':>6}")
    for name, r in results.items():
        print(f"{name:<16} {r['median_ms']:>10.3f} {r['p95_ms']:>10.3f} {r['runs']:>6}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "python": platform.python_version(),
                "machine": platform.machine(),
                "note": "whole node = 1 real TDX quote + 8 distinct simulated H100-format GPUs "
                "(own attestation keys), chain, signature and distinctness checks; all verified",
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
