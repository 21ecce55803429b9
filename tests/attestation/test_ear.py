"""The signed attestation result: verifies with the operator key only, and only until expiry."""

from __future__ import annotations

import pytest

from cocoon import keys
from cocoon.attestation import ear
from cocoon.attestation.verdict import DeviceResult, Failure, Tee, Verdict


def verdict(failed: bool = False) -> Verdict:
    gpu_failures = (Failure("BadSignature", "x"),) if failed else ()
    devices = (DeviceResult("cpu0", Tee.SNP, ()), DeviceResult("gpu0", Tee.NVGPU, gpu_failures))
    return Verdict(devices, issued_at=1000, expires_at=4600)


def token(key: object, failed: bool = False) -> str:
    claims = ear.claims(
        verdict(failed), node="n", nonce=b"\x01" * 32, workload_key=b"\x02" * 32, policy="default@1"
    )
    return ear.sign(claims, key)  # type: ignore[arg-type]


def test_round_trip_names_each_device_and_the_workload_key() -> None:
    key = keys.generate()
    claims = ear.verify(token(key), keys.public_bytes(key), now=2000)
    assert claims["ear.status"] == "affirming"
    assert set(claims["submods"]) == {"cpu0", "gpu0"}
    assert claims["cocoon.dev/workload-key"] == "02" * 32


def test_a_failed_device_is_contraindicated() -> None:
    key = keys.generate()
    claims = ear.verify(token(key, failed=True), keys.public_bytes(key), now=2000)
    assert claims["ear.status"] == "contraindicated"
    assert claims["submods"]["gpu0"]["cocoon.dev/reason"] == "BadSignature"


@pytest.mark.parametrize("mutate", ["other-key", "expired", "tampered", "garbage"])
def test_refusals(mutate: str) -> None:
    key = keys.generate()
    text = token(key)
    public = keys.public_bytes(key)
    now = 2000
    if mutate == "other-key":
        public = keys.public_bytes(keys.generate())
    elif mutate == "expired":
        now = 4600
    elif mutate == "tampered":
        header, payload, sig = text.split(".")
        text = ".".join(
            (header, payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1], sig)
        )
    else:
        text = "not.a.jwt.at-all"
    with pytest.raises(ear.TokenError):
        ear.verify(text, public, now=now)
