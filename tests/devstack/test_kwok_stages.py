"""A fleet benchmark's simulated kubelets heartbeat as often as it says, and nothing else of
kwok's stages changes; a kwok whose stages lack the heartbeat is refused, not run unstretched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from cocoon.devstack import cluster as clustermod
from cocoon.devstack.cluster import HEARTBEAT_STAGE, LocalCluster

INITIALIZE: dict[str, Any] = {
    "apiVersion": "kwok.x-k8s.io/v1alpha1",
    "kind": "Stage",
    "metadata": {"name": "node-initialize"},
    "spec": {
        "resourceRef": {"apiGroup": "v1", "kind": "Node"},
        "next": {"statusTemplate": "{{ x }}"},
    },
}
HEARTBEAT: dict[str, Any] = {
    "apiVersion": "kwok.x-k8s.io/v1alpha1",
    "kind": "Stage",
    "metadata": {"name": HEARTBEAT_STAGE},
    "spec": {
        "resourceRef": {"apiGroup": "v1", "kind": "Node"},
        "delay": {"durationMilliseconds": 600000, "jitterDurationMilliseconds": 610000},
        "next": {"statusTemplate": "conditions:\n{{ range NodeConditions }}\n{{ end }}\n"},
    },
}


def kwok_stages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *stages: dict[str, Any]) -> Path:
    path = tmp_path / "stages.yaml"
    path.write_text(yaml.safe_dump_all(stages))
    monkeypatch.setattr(clustermod, "stages_file", lambda: path)
    return path


def test_kwoks_own_stages_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    own = kwok_stages(tmp_path, monkeypatch, INITIALIZE, HEARTBEAT)
    assert LocalCluster(tmp_path / "w", tmp_path)._stages() == own


def test_the_heartbeat_is_stretched_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kwok_stages(tmp_path, monkeypatch, INITIALIZE, HEARTBEAT)
    workdir = tmp_path / "w"
    workdir.mkdir()
    path = LocalCluster(workdir, tmp_path, node_heartbeat_seconds=3600)._stages()
    initialize, heartbeat = yaml.safe_load_all(path.read_text())
    assert heartbeat["spec"]["delay"] == {
        "durationMilliseconds": 3_600_000,
        "jitterDurationMilliseconds": 3_610_000,
    }
    assert {k: v for k, v in heartbeat["spec"].items() if k != "delay"} == {
        k: v for k, v in HEARTBEAT["spec"].items() if k != "delay"
    }
    assert initialize == INITIALIZE


def test_stages_without_a_heartbeat_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kwok_stages(tmp_path, monkeypatch, INITIALIZE)
    with pytest.raises(RuntimeError, match=HEARTBEAT_STAGE):
        LocalCluster(tmp_path / "w", tmp_path, node_heartbeat_seconds=3600)._stages()
