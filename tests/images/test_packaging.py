"""What ships beside the code: the chart's CRD copies are crds/, and the Tiltfile points at files
that exist and sets values the chart's schema accepts (checked with helm where it is built)."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

from cocoon.devstack.binaries import ensure_binaries

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "cocoon"
TILTFILE = REPO / "Tiltfile"


def tilt_call_arguments(function: str) -> list[ast.Call]:
    """Tiltfiles are Starlark, a Python dialect: Python's parser reads this one."""
    tree = ast.parse(TILTFILE.read_text())
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        if node.func.id == function
    ]


def literal(node: ast.expr, names: dict[str, str]) -> object:
    """Constant-fold the Tiltfile's string expressions (concatenation, repetition, names)."""
    if isinstance(node, ast.Name):
        return names[node.id]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return literal(node.left, names) + literal(node.right, names)  # type: ignore[operator]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        return literal(node.left, names) * literal(node.right, names)  # type: ignore[operator]
    if isinstance(node, ast.List):
        return [literal(e, names) for e in node.elts]
    return ast.literal_eval(node)


def tilt_constants() -> dict[str, str]:
    tree = ast.parse(TILTFILE.read_text())
    names: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            value = literal(node.value, names)
            if isinstance(value, str):
                names[node.targets[0].id] = value
    return names


def keyword(call: ast.Call, name: str, names: dict[str, str]) -> object:
    for kw in call.keywords:
        if kw.arg == name:
            return literal(kw.value, names)
    return None


def helm_sets() -> list[str]:
    names = tilt_constants()
    (call,) = tilt_call_arguments("helm")
    chart = literal(call.args[0], names)
    assert isinstance(chart, str) and (REPO / chart / "Chart.yaml").exists()
    sets = keyword(call, "set", names)
    assert isinstance(sets, list) and all(isinstance(s, str) for s in sets)
    return [str(s) for s in sets]


def test_tiltfile_references_files_that_exist() -> None:
    names = tilt_constants()
    builds = tilt_call_arguments("docker_build")
    assert len(builds) == 2
    for call in builds:
        dockerfile = keyword(call, "dockerfile", names)
        assert isinstance(dockerfile, str) and (REPO / dockerfile).exists(), dockerfile
        for path in keyword(call, "only", names) or []:  # type: ignore[attr-defined]
            assert (REPO / str(path)).exists(), path
    for call in tilt_call_arguments("local_resource"):
        for path in keyword(call, "deps", names) or []:  # type: ignore[attr-defined]
            assert (REPO / str(path)).exists(), path
    # images the Tiltfile builds are the ones the chart's values name
    values = (CHART / "values.yaml").read_text()
    for call in builds:
        image = literal(call.args[0], names)
        repository, _, name = str(image).rpartition("/")
        assert f"repository: {repository}" in values and f"image: {name}" in values, image


def test_tiltfile_sets_simulated_mode_only() -> None:
    sets = dict(s.split("=", 1) for s in helm_sets())
    assert sets["simulated"] == "true"
    assert re.fullmatch(r"-?[0-9]+:[0-9a-fA-F]{64}", sets["payout.address"])


def test_tiltfile_values_are_valid_for_the_chart(tmp_path: Path) -> None:
    helm = ensure_binaries() / "helm"
    args = [a for s in helm_sets() for a in ("--set", s)]
    result = subprocess.run(
        [str(helm), "template", "cocoon", str(CHART), "--kube-version", "1.34.4", *args],
        capture_output=True,
        text=True,
        check=False,
        env={"HELM_CACHE_HOME": str(tmp_path), "HELM_CONFIG_HOME": str(tmp_path), "PATH": ""},
    )
    assert result.returncode == 0, result.stderr
    # and the schema would refuse a bad one: the check above can fail
    bad = subprocess.run(
        [str(helm), "template", "cocoon", str(CHART), *args, "--set", "meter.pullPolicy=Nope"],
        capture_output=True,
        text=True,
        check=False,
        env={"HELM_CACHE_HOME": str(tmp_path), "HELM_CONFIG_HOME": str(tmp_path), "PATH": ""},
    )
    assert bad.returncode != 0 and "schema" in bad.stderr
    for name in ("cocoon-operator", "cocoon-agent", "cocoon-chain-emulator"):
        assert f"name: {name}\n" in result.stdout, f"Tiltfile's k8s_resource {name} not rendered"
