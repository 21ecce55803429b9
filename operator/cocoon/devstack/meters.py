"""Registered meters and a payer's channel on the local stack, without the paid pods.

The payments e2e tests and the credit reaction benchmark talk to the operator exactly as a meter
does (signed usage reports, signed credit polls, over the operator's TLS); only the meter's
registration (evidence and pod token, exercised end to end by the paid-inference story) is
replaced by writing its record into the pool's status with the admin kubeconfig.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cocoon import keys, signed_request
from cocoon.devstack.calls import http_json
from cocoon.devstack.cluster import LocalCluster
from cocoon.devstack.process import wait_for
from cocoon.devstack.stack import OPERATOR_NAMESPACE, Operator
from cocoon.meter import usage_report
from cocoon.ton import keyfile
from cocoon.ton.units import TON

PRICE = {"perOutputToken": "1"}  # a report's cost is its output token count


def journal_of(key: Ed25519PrivateKey) -> str:
    return hashlib.sha256(keys.public_bytes(key)).hexdigest()[:32]


def registered_meters(cluster: LocalCluster, namespace: str, count: int) -> list[Ed25519PrivateKey]:
    """`count` meters (replicas) of pool `pool`, as far as the payments area can tell: the pool
    with their meter records written into its status."""
    cluster.apply(
        {
            "apiVersion": "cocoon.dev/v1alpha1",
            "kind": "InferencePool",
            "metadata": {"name": "pool", "namespace": namespace},
            "spec": {
                "model": {"name": "add", "repository": {"configMap": {"name": "models"}}},
                "replicas": 0,
                "price": PRICE,
            },
        }
    )
    now = datetime.now(UTC)
    meters = [keys.generate() for _ in range(count)]
    records = [
        {
            "pod": f"pool-meter-{i}",
            "podUid": f"uid-{i + 1}",
            "node": "gpu",
            "poolGeneration": 1,
            "price": PRICE,
            "receiptPublicKey": keys.public_bytes(key).hex(),
            "tlsSpkiSha256": "00" * 32,
            "journalId": journal_of(key),
            "verifiedAt": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "expiresAt": (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        for i, key in enumerate(meters)
    ]
    cluster.kubectl(
        "patch", "inferencepool.cocoon.dev", "pool", "-n", namespace, "--subresource=status",
        "--type=merge", "-p", json.dumps({"status": {"meters": records}}),
    )  # fmt: skip
    return meters


def registered_meter(cluster: LocalCluster, namespace: str) -> Ed25519PrivateKey:
    """The one registered meter of pool `pool`."""
    return registered_meters(cluster, namespace, 1)[0]


def report(
    key: Ed25519PrivateKey, namespace: str, cost: int, seq: int, *, pool: str = "pool",
    channel: str = "ch",
) -> dict[str, Any]:
    """A meter's signed cumulative report: `cost` nanoton over `seq` requests so far."""
    unsigned = usage_report.UsageReport(
        meter_public_key=keys.public_bytes(key).hex(),
        journal_id=journal_of(key),
        pool=f"{namespace}/{pool}",
        channel=f"{namespace}/{channel}",
        units=usage_report.UsageUnits(requests=seq, input_tokens=0, output_tokens=cost),
        cost_nanoton=str(cost),
        journal_sequence=seq,
        issued_at=datetime.now(UTC),
    )
    return usage_report.sign(unsigned, key).to_api()


def signed_credit(
    operator: Operator, namespace: str, key: Ed25519PrivateKey, pool: str = "pool"
) -> tuple[int, Any]:
    """The meter's credit poll: a request signed with its receipt key (cocoon.signed_request)."""
    path = f"/usage/v1/credit/{namespace}/{pool}"
    header = {signed_request.HEADER: signed_request.sign(key, "GET", path)}
    return http_json("GET", f"{operator.api_url}{path}", context=operator.tls, headers=header)


def post_report(operator: Operator, body: dict[str, Any], *, expect: int = 200) -> Any:
    """POST a report as a meter does: until answered `expect` (a replica's view of the pool's
    meter records trails the API server by a watch event; meanwhile it answers 403)."""
    url = f"{operator.api_url}/usage/v1/reports"
    answers: list[tuple[int, Any]] = []

    def answered() -> bool:
        answers.append(http_json("POST", url, body, context=operator.tls))
        return answers[-1][0] == expect

    wait_for(answered, timeout=30, what=f"the report answered {expect}", interval=0.2)
    return answers[-1][1]


def payer_and_channel(
    namespace: str, payer_key: Ed25519PrivateKey, **spec: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The payer's key Secret and a managed-signing PaymentChannel `ch` for pool `pool`, on the
    provider's default network, paying the provider's payout address."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "payer", "namespace": namespace},
        "data": {"key": base64.b64encode(keyfile.to_json(payer_key).encode()).decode()},
    }
    channel = {
        "apiVersion": "cocoon.dev/v1alpha1",
        "kind": "PaymentChannel",
        "metadata": {"name": "ch", "namespace": namespace},
        "spec": {
            "poolName": "pool",
            "payer": {"keySecretRef": {"name": "payer"}},
            "deposit": str(2 * TON),
            **spec,
        },
    }
    return secret, channel


def allow_secrets(cluster: LocalCluster, namespace: str) -> None:
    """The tenant lets the operator use Secrets in its namespace (the documented opt-in)."""
    cluster.kubectl(
        "create", "rolebinding", "cocoon-operator-secrets", "-n", namespace,
        "--clusterrole=cocoon-operator-secrets",
        f"--serviceaccount={OPERATOR_NAMESPACE}:cocoon-operator",
    )  # fmt: skip
