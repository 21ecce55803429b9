"""Node attestation on a real control plane with simulated-TEE agents: TDX and SNP nodes side by
side, scheduling waits for verification; bad evidence, stale or reused nonces, wrong roots and
debug guests are refused with a reason; expiry evicts; a restart mid-challenge converges; nothing
but the operator can attest."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from cocoon import keys
from cocoon.agent.simulated import DEFAULT_MEASUREMENT, SimulatedTee
from cocoon.attestation import ear
from cocoon.controllers import nodes
from cocoon.devstack.agents import Agents, simulated_policy, simulated_tee
from cocoon.devstack.cluster import LocalCluster
from cocoon.devstack.gpunode import GpuNode
from cocoon.devstack.pccs import Pccs
from cocoon.devstack.stack import Operator
from cocoon.kube import NODES, Kube
from e2e.conftest import NodeFactory, wait_attested
from e2e.harness import condition, eventually, get
from e2e.test_inferencepool import pods_of, pool, ready_condition

pytestmark = pytest.mark.e2e


def attested_node(cluster: LocalCluster, name: str) -> dict[str, Any]:
    return get(cluster, "attestednode", name) or {}


def taints(cluster: LocalCluster, name: str) -> set[tuple[str, str]]:
    node = get(cluster, "node", name) or {}
    return {(t["key"], t["effect"]) for t in node.get("spec", {}).get("taints") or []}


def wait_reason(
    cluster: LocalCluster, name: str, reason: str, timeout: float = 60
) -> dict[str, Any]:
    def seen() -> dict[str, Any] | None:
        cond = condition(attested_node(cluster, name), "Ready")
        return cond if cond.get("reason") == reason else None

    return dict(eventually(seen, timeout=timeout, what=f"{name} Ready reason {reason}"))


def post(
    url: str, body: dict[str, Any], token: str, operator: Operator
) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10, context=operator.tls) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_pool_schedules_only_after_attestation(
    cluster: LocalCluster, operator: Operator, nodes: NodeFactory, namespace: str
) -> None:
    nodes.add(GpuNode("at-0", gpus=4, tee="sev-snp"))
    # discovered: an AttestedNode, a challenge, and the NoSchedule taint until verified
    eventually(
        lambda: (
            condition(attested_node(cluster, "at-0"), "Ready").get("reason") == "AwaitingEvidence"
        ),
        what="challenge issued",
    )
    assert ("cocoon.dev/unattested", "NoSchedule") in taints(cluster, "at-0")
    cluster.apply(pool("wait", namespace, gpusPerReplica=4))
    eventually(
        lambda: ready_condition(cluster, namespace, "wait").get("reason") == "NoAttestedNodes",
        what="pool waiting for attestation",
    )
    assert all(not p["spec"].get("nodeName") for p in pods_of(cluster, namespace, "wait"))

    nodes.attest("at-0")
    eventually(
        lambda: ready_condition(cluster, namespace, "wait").get("status") == "True",
        what="pool Ready once the node is attested",
    )
    assert {p["spec"]["nodeName"] for p in pods_of(cluster, namespace, "wait")} == {"at-0"}

    an = attested_node(cluster, "at-0")
    status = an["status"]
    assert status["verdict"] == "Verified"
    assert [d["id"] for d in status["devices"]] == ["cpu0", "gpu0", "gpu1", "gpu2", "gpu3"]
    assert {d["status"] for d in status["devices"]} == {"affirming"}
    assert status.get("challenge") is None  # the nonce was single-use
    node = get(cluster, "node", "at-0")
    assert node["metadata"]["labels"]["cocoon.dev/gpu-cc"] == "true"

    # the signed result names the workload key the node bound into its evidence
    keys_url = f"{operator.api_url}/attestation/v1/keys"
    with urllib.request.urlopen(keys_url, context=operator.tls) as r:
        jwk = json.loads(r.read())["keys"][0]
    public = ear._unb64(jwk["x"])
    claims = ear.verify(status["attestationToken"], public, now=int(time.time()))
    assert claims["cocoon.dev/workload-key"] == status["workloadPublicKey"]
    assert claims["submods"]["gpu3"]["ear.status"] == "affirming"

    table = cluster.kubectl("get", "an", "at-0").stdout.splitlines()
    assert table[0].split()[:4] == ["NAME", "READY", "TEE", "VERDICT"]
    assert table[1].split()[:4] == ["at-0", "True", "sev-snp", "Verified"]


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        (["--simulate-tamper"], "BadSignature"),
        (["--simulate-debug"], "DebugEnabled"),
        (["--simulate-measurement", "ab" * 48], "MeasurementMismatch"),
    ],
    ids=["tampered", "debug-guest", "wrong-measurement"],
)
def test_bad_evidence_leaves_the_node_unattested(
    cluster: LocalCluster,
    operator: Operator,
    nodes: NodeFactory,
    agents: Agents,
    flags: list[str],
    reason: str,
) -> None:
    name = f"bad-{reason.lower()}"
    nodes.add(GpuNode(name, gpus=1, tee="sev-snp"))
    agents.start(name, "--gpus", "1", *flags)
    cond = wait_reason(cluster, name, reason)
    assert cond["status"] == "False"
    assert "stays tainted" in cond["message"]
    an = attested_node(cluster, name)
    assert an["status"]["verdict"] == "Rejected"
    assert an["status"]["workloadPublicKey"] == ""
    node = get(cluster, "node", name)
    assert "cocoon.dev/attested" not in node["metadata"]["labels"]
    assert {
        ("cocoon.dev/unattested", "NoSchedule"),
        ("cocoon.dev/unattested", "NoExecute"),
    } <= taints(cluster, name)
    events = json.loads(
        cluster.kubectl(
            "get",
            "events",
            "-n",
            "default",
            "--field-selector",
            f"involvedObject.name={name}",
            "-o",
            "json",
        ).stdout
    )
    assert reason in {e["reason"] for e in events["items"]}


def test_a_root_the_policy_does_not_name_is_refused(
    cluster: LocalCluster, operator: Operator, nodes: NodeFactory, agents: Agents
) -> None:
    other = simulated_tee(cluster.workdir / "another-cluster")
    nodes.add(GpuNode("wrong-root", gpus=1, tee="sev-snp"))
    agents.start("wrong-root", "--gpus", "1", simulated_dir=other)
    cond = wait_reason(cluster, "wrong-root", "UntrustedRoot")
    assert cond["status"] == "False"
    assert "cocoon.dev/attested" not in get(cluster, "node", "wrong-root")["metadata"]["labels"]


def test_stale_and_reused_nonces_are_refused(
    cluster: LocalCluster,
    operator: Operator,
    nodes: NodeFactory,
    agents: Agents,
    simulated: Path,
) -> None:
    nodes.add(GpuNode("nonce", gpus=1, tee="sev-snp"))
    agents.token_for("nonce")
    challenge = eventually(
        lambda: (attested_node(cluster, "nonce").get("status") or {}).get("challenge"),
        what="a challenge",
    )
    sim = SimulatedTee.load(simulated)
    key = keys.generate()
    public = keys.public_bytes(key)
    nonce = bytes.fromhex(challenge["nonce"])
    body = {
        "nonce": nonce.hex(),
        "publicKey": public.hex(),
        "evidence": sim.node_evidence(nonce, public, gpus=1).to_dict(),
    }
    url = f"{operator.api_url}/attestation/v1/nodes/nonce/evidence"
    token = agents.operator_token("nonce").read_text()
    status, answer = post(url, body, token, operator)
    assert (status, answer["verified"]) == (200, True)
    status, answer = post(url, body, token, operator)  # replayed
    assert (status, answer["error"]["reason"]) == (409, "NonceNotCurrent")

    stale = bytes(32)
    stale_body = {
        "nonce": stale.hex(),
        "publicKey": public.hex(),
        "evidence": sim.node_evidence(stale, public, gpus=1).to_dict(),
    }
    status, answer = post(url, stale_body, token, operator)
    assert (status, answer["error"]["reason"]) == (409, "NonceNotCurrent")
    assert attested_node(cluster, "nonce")["status"]["verdict"] == "Verified"


def test_agents_cannot_attest_themselves_or_other_nodes(
    cluster: LocalCluster,
    operator: Operator,
    nodes: NodeFactory,
    agents: Agents,
    simulated: Path,
) -> None:
    nodes.add(GpuNode("self-a", gpus=1, tee="sev-snp"), GpuNode("self-b", gpus=1, tee="sev-snp"))
    token_a = agents.token_for("self-a")
    agent_kc = agents.kubeconfig_for("self-a", token_a)
    eventually(
        lambda: (attested_node(cluster, "self-b").get("status") or {}).get("challenge"),
        what="challenge for self-b",
    )

    # RBAC: the agent reads its challenge and can write nothing
    def can(*args: str) -> bool:
        out = cluster.kubectl("auth", "can-i", *args, kubeconfig=agent_kc, check=False)
        return out.stdout.strip() == "yes"

    assert can("get", "attestednodes.cocoon.dev")
    assert not can("patch", "attestednodes.cocoon.dev", "--subresource=status")
    assert not can("patch", "nodes")
    patch = cluster.kubectl(
        "patch",
        "attestednode",
        "self-a",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"verdict": "Verified"}}',
        kubeconfig=agent_kc,
        check=False,
    )
    assert patch.returncode != 0 and "forbidden" in patch.stderr

    # admission: even the node's own kubelet identity cannot label or untaint itself
    node_kc = cluster.certificate_kubeconfig(
        "system:node:self-a", "system:nodes", cluster.workdir / "self-a.kubeconfig"
    )
    label = cluster.kubectl(
        "label", "node", "self-a", "cocoon.dev/attested=true", kubeconfig=node_kc, check=False
    )
    assert label.returncode != 0 and "ValidatingAdmissionPolicy" in label.stderr
    untaint = cluster.kubectl(
        "taint",
        "node",
        "self-a",
        "cocoon.dev/unattested:NoSchedule-",
        kubeconfig=node_kc,
        check=False,
    )
    # refused twice over: NodeRestriction forbids kubelets taint changes, our policy backs it up
    assert untaint.returncode != 0 and "forbidden" in untaint.stderr.lower()

    # the evidence endpoint: a token bound to self-a's pod cannot answer for self-b
    challenge = attested_node(cluster, "self-b")["status"]["challenge"]
    sim = SimulatedTee.load(simulated)
    public = keys.public_bytes(keys.generate())
    nonce = bytes.fromhex(challenge["nonce"])
    body = {
        "nonce": nonce.hex(),
        "publicKey": public.hex(),
        "evidence": sim.node_evidence(nonce, public, gpus=1).to_dict(),
    }
    url = f"{operator.api_url}/attestation/v1/nodes/self-b/evidence"
    status, answer = post(url, body, agents.operator_token("self-a").read_text(), operator)
    assert (status, answer["error"]["reason"]) == (403, "WrongNode")
    status, answer = post(url, body, "not-a-token", operator)
    assert status == 401
    # a token the API server accepts is not one the operator accepts (audience)
    status, answer = post(url, body, token_a.read_text(), operator)
    assert status == 401 and "audience" in answer["error"]["message"]
    assert attested_node(cluster, "self-b")["status"]["verdict"] == "Pending"


def test_operator_restart_mid_challenge_converges(
    cluster: LocalCluster, operator: Operator, nodes: NodeFactory, agents: Agents
) -> None:
    nodes.add(GpuNode("mid", gpus=1, tee="sev-snp"))
    first = eventually(
        lambda: (attested_node(cluster, "mid").get("status") or {}).get("challenge"),
        what="challenge before the restart",
    )
    operator.kill()
    operator.start()
    # the outstanding challenge survives the restart: it lives in status, not in memory
    assert attested_node(cluster, "mid")["status"]["challenge"]["nonce"] == first["nonce"]
    agents.start("mid", "--gpus", "1")
    wait_attested(cluster, "mid")
    assert attested_node(cluster, "mid")["status"]["verdict"] == "Verified"


def test_expired_verdict_evicts_running_pods(
    cluster: LocalCluster,
    operator: Operator,
    nodes: NodeFactory,
    agents: Agents,
    simulated: Path,
    namespace: str,
) -> None:
    short = simulated_policy(
        simulated, name="short-lived", gpus=1, verdictLifetimeSeconds=60, reattestIntervalSeconds=50
    )
    cluster.apply(short)
    nodes.add(GpuNode("lapse", gpus=8, tee="sev-snp"))
    eventually(lambda: attested_node(cluster, "lapse"), what="AttestedNode created")
    cluster.kubectl(
        "patch",
        "attestednode",
        "lapse",
        "--type=merge",
        "-p",
        '{"spec": {"policyName": "short-lived"}}',
    )
    nodes.attest("lapse")
    cluster.apply(pool("evict", namespace, gpusPerReplica=8))
    pod = eventually(
        lambda: next(
            (
                p
                for p in pods_of(cluster, namespace, "evict")
                if p["spec"].get("nodeName") == "lapse"
            ),
            None,
        ),
        what="pod on the attested node",
    )
    agents.stop("lapse")  # no more answers: the verdict lapses
    # the verdict lives 60 s from its appraisal; allow as long again for a loaded machine
    cond = wait_reason(cluster, "lapse", "VerdictExpired", timeout=2 * 60)
    assert "evicted" in cond["message"]
    assert ("cocoon.dev/unattested", "NoExecute") in taints(cluster, "lapse")
    # the real taint-eviction controller in kube-controller-manager removes the pod
    eventually(
        lambda: get(cluster, "pod", pod["metadata"]["name"], "-n", namespace) is None,
        timeout=60,
        what="pod evicted from the lapsed node",
    )
    eventually(
        lambda: ready_condition(cluster, namespace, "evict").get("reason") == "NoAttestedNodes",
        what="pool reports no attested nodes",
    )


def test_agent_cli_once_reports_the_verdict(
    cluster: LocalCluster, operator: Operator, nodes: NodeFactory, agents: Agents
) -> None:
    nodes.add(GpuNode("once", gpus=2, tee="sev-snp"))
    token = agents.token_for("once")
    eventually(
        lambda: (attested_node(cluster, "once").get("status") or {}).get("challenge"),
        what="challenge",
    )
    result = subprocess.run(
        agents.argv("once", "--gpus", "2", "--once", token_file=token),
        env={**os.environ, **agents.env("once", token)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert attested_node(cluster, "once")["status"]["verdict"] == "Verified"


def test_a_policy_without_reference_values_says_so(
    cluster: LocalCluster, operator: Operator, simulated: Path
) -> None:
    """AnyMeasurementAccepted on the policy, a Warning Event, and a `kubectl get ap` column."""
    weak = simulated_policy(simulated, name="weak", gpus=0)
    weak["spec"] = {**weak["spec"], "snp": {}}
    cluster.apply(weak)

    def any_measurement() -> dict[str, Any]:
        return condition(get(cluster, "attestationpolicy", "weak") or {}, "AnyMeasurementAccepted")

    cond = eventually(lambda: any_measurement().get("status") == "True" and any_measurement())
    assert "snp.measurements is empty" in cond["message"]
    table = cluster.kubectl("get", "ap", "weak", "--no-headers").stdout.split()
    assert table[:3] == ["weak", "True", "True"]
    events = get(cluster, "events", "-n", "default", "--field-selector", "involvedObject.name=weak")
    assert ("Warning", "ReferenceValuesMissing") in {
        (e["type"], e["reason"]) for e in (events or {}).get("items", [])
    }
    pinned = simulated_policy(simulated, name="weak", gpus=0)  # pins the simulated measurement
    cluster.apply(pinned)
    eventually(lambda: any_measurement().get("status") == "False", what="measurements pinned")
    cluster.kubectl("delete", "attestationpolicy", "weak")


def test_a_tdx_node_and_an_snp_node_side_by_side(
    cluster: LocalCluster, operator: Operator, nodes: NodeFactory, pccs: Pccs
) -> None:
    """Both CPU TEEs through the production verifiers under one policy; the TDX agent sends its
    quote without collateral, as configfs-tsm gives it, and the operator fetches it from the
    local PCCS stand-in."""
    nodes.add(GpuNode("tdx-0", gpus=1, tee="tdx"), GpuNode("snp-0", gpus=1, tee="sev-snp"))
    nodes.attest("tdx-0")
    nodes.attest("snp-0")
    for name, kind in (("tdx-0", "tdx"), ("snp-0", "snp")):
        status = attested_node(cluster, name)["status"]
        assert status["verdict"] == "Verified"
        cpu = status["devices"][0]
        assert (cpu["id"], cpu["kind"], cpu["status"]) == ("cpu0", kind, "affirming")
        assert cpu["measurement"] == DEFAULT_MEASUREMENT.hex()
    assert any(r.startswith("/tdx/certification/v4/tcb?fmspc=") for r in pccs.requests)
    rows = cluster.kubectl("get", "an", "tdx-0", "snp-0", "--no-headers").stdout.splitlines()
    assert {tuple(r.split()[:4]) for r in rows} == {
        ("tdx-0", "True", "tdx", "Verified"),
        ("snp-0", "True", "sev-snp", "Verified"),
    }


def test_the_taint_write_is_guarded_by_the_spec_not_by_heartbeats(cluster: LocalCluster) -> None:
    """On the real API server: a write to the Node after our read that leaves its spec alone (a
    heartbeat) does not fail our taint write; another writer's taint does (422, the JSON
    patch's failed test), so replacing the list from a stale copy never drops it."""
    name = "guarded"
    cluster.add_nodes(GpuNode(name, tee=None))  # no TEE label: the session's operators ignore it

    def settled() -> bool:  # kwok made it Ready and kcm lifted its not-ready taint
        node = get(cluster, "node", name) or {}
        ready = condition(node, "Ready").get("status") == "True"
        return ready and not (node.get("spec") or {}).get("taints")

    eventually(settled, timeout=60, what=f"node {name} Ready and untainted")
    theirs = {"key": "example.com/maintenance", "value": "true", "effect": "NoSchedule"}
    pending = {"spec": {"tee": "sev-snp"}, "status": {"verdict": "Pending"}}
    verified = {"spec": {"tee": "sev-snp"}, "status": {"verdict": "Verified"}}

    async def scenario() -> tuple[int, list[str]]:
        kube = await Kube.connect(str(cluster.kubeconfig))
        try:
            read = await kube.get(NODES, name)
            await kube.patch(NODES, name, {"metadata": {"annotations": {"heartbeat": "1"}}})
            written = await kube.patch_ops(NODES, name, nodes.effects_patch(read, pending))
            assert written["metadata"]["resourceVersion"] != read["metadata"]["resourceVersion"]
            await kube.patch(
                NODES, name, {"spec": {"taints": [*written["spec"]["taints"], theirs]}}
            )
            with pytest.raises(ApiException) as refused:
                await kube.patch_ops(NODES, name, nodes.effects_patch(written, verified))
            await nodes.apply_effects(kube, written, verified)  # re-reads, decides again
            live = await kube.get(NODES, name)
            return refused.value.status, [t["key"] for t in live["spec"].get("taints") or []]
        finally:
            await kube.close()

    try:
        status, left = asyncio.run(scenario())
        assert status == 422
        assert left == ["example.com/maintenance"]  # ours gone, theirs kept
    finally:
        cluster.kubectl("delete", "node", name, "--wait=false")
