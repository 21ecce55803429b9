"""One GPU cannot pass for several: every GPU in a node's evidence must be a different device."""

from __future__ import annotations

import dataclasses
import os
import re
from datetime import UTC, datetime

import pytest
from attestation_vectors import DEFAULT, GPU_550_AT, read

from cocoon import keys
from cocoon.agent.simulated import SimulatedTee
from cocoon.attestation import appraisal, encoding, nvgpu
from cocoon.attestation.policy import Policy
from cocoon.attestation.verdict import DeviceResult, Tee

NOW = 1766000000
SIM = SimulatedTee.generate(now=datetime.fromtimestamp(NOW, UTC))
POLICY = Policy.from_spec(SIM.policy_spec(gpu={"minCount": 8}))
NONCE = os.urandom(32)
KEY = keys.public_bytes(keys.generate())


def gpu(name: str, key: str = "", device_id: str = "") -> DeviceResult:
    claims = {"deviceKey": key, "deviceId": device_id} if key else {}
    return DeviceResult(name, Tee.NVGPU, (), claims)


@pytest.mark.parametrize(
    ("gpus", "message"),
    [
        ([gpu("gpu0", "aa"), gpu("gpu1", "bb")], None),
        ([gpu("gpu0", "aa", "D1"), gpu("gpu1", "bb", "D2")], None),
        (
            [gpu("gpu0", "aa"), gpu("gpu1", "bb"), gpu("gpu2", "aa")],
            "gpu2 .* attestation key .* gpu0",
        ),
        ([gpu("gpu0", "aa", "D1"), gpu("gpu1", "bb", "D1")], "gpu1 .* device ID \\(D1\\) as gpu0"),
        ([gpu("gpu0", "aa", ""), gpu("gpu1", "bb", "")], None),  # no device ID in either chain
        ([gpu("gpu0"), gpu("gpu1")], None),  # not authentic: rejected elsewhere, not duplicates
        ([], None),
    ],
)
def test_duplicate_gpus(gpus: list[DeviceResult], message: str | None) -> None:
    failure = appraisal.duplicate_gpus(gpus)
    if message is None:
        assert failure is None
    else:
        assert failure is not None and failure.reason == "DuplicateGpu"
        assert re.search(message, failure.message), failure.message


def test_simulated_node_has_eight_distinct_gpus() -> None:
    evidence = SIM.node_evidence(NONCE, KEY, gpus=8)
    verdict = appraisal.appraise_node(evidence, POLICY, now=NOW, nonce=NONCE, public_key=KEY)
    assert verdict.verified, verdict.message
    assert len({d.claims["deviceKey"] for d in verdict.devices[1:]}) == 8
    assert SIM.gpu_device(3)[1] is SIM.gpu_device(3)[1]  # issued once per process
    other_node = SIM.for_node("other")
    assert nvgpu.device_key(other_node.gpu_device(0)[1]) != nvgpu.device_key(SIM.gpu_device(0)[1])


def test_one_gpu_sent_eight_times_is_refused() -> None:
    evidence = SIM.node_evidence(NONCE, KEY, gpus=8)
    copies = dataclasses.replace(evidence, gpus=(evidence.gpus[0],) * 8)
    verdict = appraisal.appraise_node(copies, POLICY, now=NOW, nonce=NONCE, public_key=KEY)
    assert not verdict.verified
    assert verdict.reason == "DuplicateGpu"
    assert all(d.failures == () for d in verdict.devices)  # each copy alone is authentic
    one_repeated = dataclasses.replace(evidence, gpus=(*evidence.gpus[:7], evidence.gpus[2]))
    verdict = appraisal.appraise_node(one_repeated, POLICY, now=NOW, nonce=NONCE, public_key=KEY)
    assert verdict.reason == "DuplicateGpu"
    assert "gpu7" in verdict.message and "gpu2" in verdict.message


def test_real_h100_identity_claims() -> None:
    report = encoding.decode_blob(read("nvgpu/h100_550_report.hex"))
    chain = read("nvgpu/h100_550_chain.pem")
    result = appraisal.appraise_gpu(report, chain, DEFAULT, now=GPU_550_AT)
    assert result.reason is None, result.message
    assert result.claims["deviceId"] == "41431D480FE5E87274"  # the GH100 BROM certificate's
    assert len(str(result.claims["deviceKey"])) == 64
    twice = [dataclasses.replace(result, name="gpu0"), dataclasses.replace(result, name="gpu1")]
    failure = appraisal.duplicate_gpus(twice)
    assert failure is not None and failure.reason == "DuplicateGpu"
