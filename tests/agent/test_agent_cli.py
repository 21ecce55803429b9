"""`cocoon agent`: the simulated TEE's files and policy, usage errors, and a whole `run --once`
against a fake API server (the AttestedNode) and a fake operator endpoint."""

from __future__ import annotations

import asyncio
import logging
import stat
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from agent_fakes import SIM, FakeNode, FakeOperator, challenge
from aiohttp import web
from kubernetes_asyncio.config import kube_config

from cocoon import keys
from cocoon.agent.challenges import KubeChallenges, parse_challenge
from cocoon.agent.loop import FetchError
from cocoon.agent.simulated import SimulatedTee
from cocoon.api.attestationpolicy import AttestationPolicySpec
from cocoon.attestation import appraisal
from cocoon.attestation.policy import Policy
from cocoon.attestation.verdict import Verdict
from cocoon.cli import main

NODE = "node-a"


def test_save_load_round_trip_verifies(tmp_path: Path) -> None:
    SIM.save(tmp_path)
    for name in ("ark.key.pem", "ask.key.pem", "vcek.key.pem", "gpu-ica.key.pem"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    loaded = SimulatedTee.load(tmp_path).for_node(NODE)
    nonce, public = challenge().nonce, keys.public_bytes(keys.generate())
    verdict = appraisal.appraise_node(
        loaded.node_evidence(bytes.fromhex(nonce), public, gpus=1),
        Policy.from_spec(SIM.policy_spec()),
        now=int(loaded.vcek.not_valid_before_utc.timestamp()) + 86400,
        nonce=bytes.fromhex(nonce),
        public_key=public,
    )
    assert verdict.verified, verdict.message
    assert verdict.device("cpu0").claims["chipId"] == SIM.for_node(NODE).chip_id.hex()


def test_chip_id_is_stable_per_node() -> None:
    assert SIM.for_node("a").chip_id == SIM.for_node("a").chip_id != SIM.for_node("b").chip_id
    assert SIM.for_node("a").vcek != SIM.vcek


def test_load_refuses_a_directory_that_is_not_a_simulated_tee(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a saved simulated TEE"):
        SimulatedTee.load(tmp_path)


def test_init_then_policy_trusts_exactly_that_tee(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "sim"
    assert main(["agent", "simulated", "init", "--dir", str(directory)]) == 0
    assert main(["agent", "simulated", "init", "--dir", str(directory)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["agent", "simulated", "policy", "--dir", str(directory), "--gpus", "2"]) == 0
    document = yaml.safe_load(capsys.readouterr().out)
    assert document["apiVersion"] == "cocoon.dev/v1alpha1"
    assert document["kind"] == "AttestationPolicy"
    assert document["metadata"] == {"name": "default"}
    policy = Policy.from_spec(AttestationPolicySpec.model_validate(document["spec"]))

    sim = SimulatedTee.load(directory).for_node(NODE)
    nonce, public = bytes.fromhex(challenge().nonce), keys.public_bytes(keys.generate())
    now = int(sim.vcek.not_valid_before_utc.timestamp()) + 86400

    def verdict(**knobs: object) -> Verdict:
        evidence = sim.node_evidence(nonce, public, **knobs)  # type: ignore[arg-type]
        return appraisal.appraise_node(evidence, policy, now=now, nonce=nonce, public_key=public)

    assert verdict(gpus=2).verified, verdict(gpus=2).message
    assert verdict(gpus=1).reason == "NotEnoughGpus"
    assert verdict(gpus=2, measurement=bytes(48)).reason == "MeasurementMismatch"
    other = SIM.node_evidence(nonce, public, gpus=2)
    untrusted = appraisal.appraise_node(other, policy, now=now, nonce=nonce, public_key=public)
    assert untrusted.reason == "UntrustedRoot"


def test_parse_challenge() -> None:
    assert parse_challenge(None) is None
    assert parse_challenge({"status": {}}) is None
    current = challenge()
    parsed = parse_challenge({"status": {"challenge": current.to_api()}})
    assert parsed == current
    with pytest.raises(FetchError, match="malformed"):
        parse_challenge({"status": {"challenge": {"nonce": "zz"}}})


def _run_args(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "agent", "run", "--node", NODE, "--operator-url", "http://127.0.0.1:1",
        "--token-file", str(tmp_path / "token"), "--key-file", str(tmp_path / "key.pem"), *extra,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--configfs-tsm", "/nonexistent/tsm"], "configfs-tsm not available"),
        (["--configfs-tsm", "/x", "--simulate-debug"], "need --simulated"),
        (["--configfs-tsm", "/x", "--gpus", "2"], "NVML"),
        (["--simulated", "/nonexistent"], "cocoon agent simulated init"),
        (["--simulated", "/x", "--simulate-measurement", "zz"], "must be hex"),
        (["--simulated", "/x", "--simulate-measurement", "00"], "48 bytes"),
        (["--simulated", "/x", "--poll-seconds", "0"], "positive"),
    ],
)
def test_usage_errors_say_what_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert main(_run_args(tmp_path, *extra)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "key.pem").exists()


def test_missing_nvml_is_explained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_driver() -> None:
        raise RuntimeError("NVML Shared Library Not Found")

    monkeypatch.setitem(sys.modules, "pynvml", SimpleNamespace(nvmlInit=no_driver))
    assert main(_run_args(tmp_path, "--configfs-tsm", str(tmp_path))) == 2
    err = capsys.readouterr().err
    assert "NVML unavailable" in err
    assert "--gpus 0" in err


@contextmanager
def serving(app: web.Application) -> Iterator[str]:
    """Serve `app` from its own thread, as a real API server and operator would be separate."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.run_until_complete(runner.cleanup())
        loop.close()


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, FakeOperator]]:
    """One server playing both the API server (GET AttestedNode) and the operator endpoint."""
    operator = FakeOperator(FakeNode(challenge()), NODE)
    app = operator.app()

    async def attested_node(request: web.Request) -> web.Response:
        current = operator.node.current
        status = {"challenge": current.to_api()} if current is not None else {}
        return web.json_response({"metadata": {"name": NODE}, "status": status})

    app.router.add_get(f"/apis/cocoon.dev/v1alpha1/attestednodes/{NODE}", attested_node)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    with serving(app) as url:
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": url}}],
            "users": [{"name": "agent", "user": {"token": "kube-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "agent"}}],
            "current-context": "fake",
        }
        (tmp_path / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
        (tmp_path / "token").write_text("agent-token")
        SIM.save(tmp_path / "sim")
        # kubernetes_asyncio reads $KUBECONFIG once, at import
        monkeypatch.setattr(
            kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "kubeconfig")
        )
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        yield url, operator
    root.handlers[:], root.level = handlers, level


@pytest.mark.parametrize(("extra", "code"), [([], 0), (["--simulate-debug"], 1)])
def test_run_once_end_to_end(
    tmp_path: Path, cluster: tuple[str, FakeOperator], extra: list[str], code: int
) -> None:
    url, operator = cluster
    args = _run_args(tmp_path, "--simulated", str(tmp_path / "sim"), "--once", *extra)
    args[args.index("--operator-url") + 1] = url
    assert main(args) == code
    [got] = operator.received
    assert got.token == "Bearer agent-token"
    assert operator.node.current is not None
    assert got.body["nonce"] == operator.node.current.nonce
    key = keys.load(tmp_path / "key.pem")
    assert got.body["publicKey"] == keys.public_bytes(key).hex()


async def test_missing_attested_node_is_a_fetch_error_with_a_hint() -> None:
    class NoObjects:
        async def get_or_none(self, kind: object, name: str) -> None:
            return None

    fetch = KubeChallenges(NoObjects(), NODE)  # type: ignore[arg-type]
    with pytest.raises(FetchError, match="labelled cocoon"):
        await fetch()
