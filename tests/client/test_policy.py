"""The caller's policy file: bare spec or whole object, ConfigMap refs as files beside it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from cocoon.agent.simulated import SimulatedTee
from cocoon.attestation.chain import sha256_der
from cocoon.client import policy


def _with_root_ref(sim: SimulatedTee, tmp_path: Path, key: str) -> Path:
    spec = sim.policy_spec().to_api()
    roots = spec["trustedRoots"]
    assert isinstance(roots, dict)
    roots["extraRoots"] = [{"name": "ark", "purpose": "AmdArk", "sha256": sha256_der(sim.ark),
                            "configMapRef": {"name": "roots", "key": key}}]
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_config_map_refs_are_files_next_to_the_policy(sim: SimulatedTee, tmp_path: Path) -> None:
    path = _with_root_ref(sim, tmp_path, "ark.pem")
    (tmp_path / "roots").mkdir()
    (tmp_path / "roots" / "ark.pem").write_bytes(sim.ark.public_bytes(serialization.Encoding.PEM))
    loaded = policy.load(path)
    assert loaded.trust is not None


@pytest.mark.parametrize(
    ("key", "error"),
    [("ark.pem", "roots/ark.pem"), ("..", "roots/..")],
)
def test_unreadable_refs_name_the_expected_file(
    sim: SimulatedTee, tmp_path: Path, key: str, error: str
) -> None:
    path = _with_root_ref(sim, tmp_path, key)
    (tmp_path / "roots").mkdir()
    with pytest.raises(policy.PolicyFileError, match=error):
        policy.load(path)


def test_whole_object_and_bad_files(sim: SimulatedTee, tmp_path: Path) -> None:
    whole = tmp_path / "object.yaml"
    whole.write_text(yaml.safe_dump(sim.policy_document("p", gpus=2)))
    assert policy.load(whole).gpu.min_count == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("allowedTees: [vax]\n")
    with pytest.raises(policy.PolicyFileError, match="invalid policy"):
        policy.load(bad)
    with pytest.raises(policy.PolicyFileError, match="cannot read"):
        policy.load(tmp_path / "absent.yaml")
