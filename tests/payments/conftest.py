"""Fixtures for the payments tests: the real chain emulator and a channel in an in-memory API."""

from __future__ import annotations

import base64
import hashlib
import shutil
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cocoon import keys, signed_request
from cocoon.controllers import channel_chain, paymentchannel, usage_api
from cocoon.kube import ATTESTED_NODES, INFERENCE_POOLS, PAYMENT_CHANNELS, SECRETS
from cocoon.ton import emulator, keyfile
from cocoon.ton.accounting import Action
from cocoon.ton.toncenter import ToncenterChain
from cocoon.ton.tvm import raw
from cocoon.ton.units import TON
from cocoon.ton.wallet import wallet_address

from .fakekube import FakeKube, views_of

NS = "dev"
POOL = "pool"
# One nanoton per completion token: a report's cost is its output token count.
PRICE = {"perOutputToken": "1"}


@pytest.fixture(scope="session")
def emulator_url() -> Iterator[str]:
    assert shutil.which("node"), "node is not installed: run `make setup`"
    with emulator.start() as running:
        yield running.url


def channel_body(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "cocoon.dev/v1alpha1",
        "kind": "PaymentChannel",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


def journal_of(key: Ed25519PrivateKey) -> str:
    return hashlib.sha256(keys.public_bytes(key)).hexdigest()[:32]


def meter_record(key: Ed25519PrivateKey, pod: str = "pool-0") -> dict[str, Any]:
    """What the operator writes when a meter registers (see controllers.meter_api)."""
    now = datetime.now(UTC)
    return {
        "pod": pod, "podUid": f"uid-{pod}", "node": "gpu-0", "poolGeneration": 1,
        "price": PRICE,
        "receiptPublicKey": keys.public_bytes(key).hex(), "tlsSpkiSha256": "00" * 32,
        "journalId": journal_of(key), "verifiedAt": now.isoformat(),
        "expiresAt": (now + timedelta(hours=1)).isoformat(),
    }


def attested_node(name: str, key: Ed25519PrivateKey, verdict: str = "Verified") -> dict[str, Any]:
    expires = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    return {
        "apiVersion": "cocoon.dev/v1alpha1",
        "kind": "AttestedNode",
        "metadata": {"name": name},
        "spec": {"nodeName": name, "tee": "TDX", "policyName": "default"},
        "status": {
            "verdict": verdict,
            "workloadPublicKey": keys.public_bytes(key).hex(),
            "expiresAt": expires,
        },
    }


class Env:
    """One developer namespace: payer key Secret, pool with a payout address, an attested meter."""

    def __init__(self, url: str, chain: ToncenterChain) -> None:
        self.url = url
        self.chain = chain
        self.kube = FakeKube()
        self.memo = kopf.Memo()
        self.memo.kube = self.kube
        self.memo.views = views_of(self.kube)
        self.payer_key = keys.generate()
        self.payer = wallet_address(keys.public_bytes(self.payer_key))
        self.payee = wallet_address(keys.public_bytes(keys.generate()))
        self.memo.payments = channel_chain.Payments.for_url(url, raw(self.payee))
        self.meter_key = keys.generate()
        self.changed: list[tuple[str, str]] = []
        self.kube.put(
            SECRETS,
            {
                "metadata": {"name": "payer", "namespace": NS},
                "data": {
                    "key": base64.b64encode(keyfile.to_json(self.payer_key).encode()).decode()
                },
            },
        )
        self.kube.put(
            INFERENCE_POOLS,
            {
                "metadata": {"name": POOL, "namespace": NS},
                "spec": {"price": PRICE},
                "status": {"meters": [meter_record(self.meter_key)]},
            },
        )
        self.kube.put(ATTESTED_NODES, attested_node("gpu-0", self.meter_key))

    def restart(self) -> None:
        """A new operator process: nothing in memory survives, only what was persisted."""
        self.memo = kopf.Memo()
        self.memo.kube = self.kube
        self.memo.views = views_of(self.kube)
        self.memo.payments = channel_chain.Payments.for_url(self.url, raw(self.payee))

    def add_channel(self, name: str = "ch", **spec: Any) -> None:
        base = {
            "poolName": POOL,
            "payer": {"keySecretRef": {"name": "payer"}},
            "deposit": str(2 * TON),
            "creditWindow": str(TON // 2),
            "claim": {"threshold": str(TON), "intervalSeconds": 3600},
            "closeDelaySeconds": 60,
        }
        self.kube.put(PAYMENT_CHANNELS, channel_body(name, base | spec))

    async def status(self, name: str = "ch") -> dict[str, Any]:
        body = await self.kube.get(PAYMENT_CHANNELS, name, NS)
        return dict(body.get("status") or {})

    async def reconcile(self, name: str = "ch", **kw: Any) -> Action:
        return await paymentchannel.reconcile(NS, name, self.memo, **kw)

    async def balance(self, address: Any) -> int:
        return (await self.chain.account(address)).balance


@pytest.fixture
async def env(emulator_url: str) -> AsyncIterator[Env]:
    chain = ToncenterChain(emulator_url)
    environment = Env(emulator_url, chain)
    await emulator.faucet(emulator_url, environment.payer, 50 * TON)
    try:
        yield environment
    finally:
        await chain.close()


def credit_headers(key: Ed25519PrivateKey, namespace: str = NS, pool: str = POOL
                   ) -> dict[str, str]:
    """The header a meter signs its credit poll with (cocoon.signed_request)."""
    target = f"/usage/v1/credit/{namespace}/{pool}"
    return {signed_request.HEADER: signed_request.sign(key, "GET", target)}


@pytest.fixture
async def api(env: Env) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    usage_api.setup_routes(app, env.memo, on_change=lambda ns, name: env.changed.append((ns, name)))
    async with TestClient(TestServer(app)) as client:
        yield client
