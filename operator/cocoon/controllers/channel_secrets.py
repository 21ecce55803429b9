"""The Secrets a PaymentChannel owns: the callers' credential and the channel's promise key.

Both are created by the operator in the channel's namespace, owned by the channel (garbage
collected with it) and never copied anywhere: meters learn only the credential's SHA-256, and
the promise key signs promises and nothing else. The payer's wallet key (spec.payer.keySecretRef)
only funds the channel, so a leaked promise key can cost at most the channel's deposit.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kubernetes_asyncio.client.exceptions import ApiException

from cocoon import keys
from cocoon.kube import SECRETS, Forbidden, Kube, Obj
from cocoon.meter.credits import credential_hash

CHANNEL_LABEL = "cocoon.dev/payment-channel"
CREDENTIAL_KEY = "token"
PROMISE_KEY = "promise-key"
RETRY_S = 30


class Blocked(Exception):
    """Reconciling cannot go on until a human acts; carries the condition to show."""

    def __init__(self, reason: str, message: str, retry_s: float = RETRY_S) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retry_s = retry_s


def secrets_denied(namespace: str) -> Blocked:
    """Secrets are opt-in per namespace: the message is the one command that opts in."""
    operator_ns = os.environ.get("COCOON_NAMESPACE", "cocoon-system")
    account = os.environ.get("COCOON_SERVICE_ACCOUNT", "cocoon-operator")
    role = os.environ.get("COCOON_SECRETS_CLUSTERROLE", "cocoon-operator-secrets")
    return Blocked(
        "SecretsAccessDenied",
        f"The operator may not read or create Secrets in {namespace} (it has no cluster-wide "
        f"Secret access). Allow it here: kubectl create rolebinding cocoon-operator-secrets "
        f"-n {namespace} --clusterrole={role} --serviceaccount={operator_ns}:{account}",
    )


async def get_secret(kube: Kube, namespace: str, name: str) -> Obj | None:
    try:
        return await kube.get_or_none(SECRETS, name, namespace)
    except Forbidden as exc:
        raise secrets_denied(namespace) from exc


async def secret_value(kube: Kube, namespace: str, name: str, key: str) -> str | None:
    secret = await get_secret(kube, namespace, name)
    value = ((secret or {}).get("data") or {}).get(key)
    return base64.b64decode(value).decode() if value else None


def _owned_secret(body: Obj, name: str, data: dict[str, bytes]) -> Obj:
    meta = body["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": {CHANNEL_LABEL: meta["name"], "app.kubernetes.io/part-of": "cocoon"},
            "ownerReferences": [
                {
                    "apiVersion": body["apiVersion"],
                    "kind": body["kind"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


async def _create_once(kube: Kube, body: Obj, name: str, data: dict[str, bytes]) -> Obj:
    """Create the Secret unless it exists; returns the one that is stored (ours or theirs)."""
    namespace = body["metadata"]["namespace"]
    existing = await get_secret(kube, namespace, name)
    if existing is not None:
        return existing
    try:
        return await kube.create(SECRETS, _owned_secret(body, name, data))
    except Forbidden as exc:
        raise secrets_denied(namespace) from exc
    except ApiException as exc:
        if exc.status != 409:  # created concurrently: keep theirs
            raise
    stored = await get_secret(kube, namespace, name)
    assert stored is not None
    return stored


def _data(secret: Obj, key: str) -> bytes:
    return base64.b64decode((secret.get("data") or {}).get(key, ""))


def credential_secret_name(channel: str) -> str:
    return f"{channel}-credential"


async def ensure_credential(kube: Kube, body: Obj) -> tuple[str, str]:
    """Create the caller credential Secret once; its token never leaves the Secret.

    Returns the Secret's name and the token's SHA-256, which is all meters ever learn."""
    name = credential_secret_name(body["metadata"]["name"])
    token = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=")
    stored = await _create_once(kube, body, name, {CREDENTIAL_KEY: token})
    return name, credential_hash(_data(stored, CREDENTIAL_KEY).decode())


def promise_key_secret_name(channel: str) -> str:
    return f"{channel}-promise-key"


async def ensure_promise_key(kube: Kube, body: Obj, name: str | None = None) -> Ed25519PrivateKey:
    """The channel's own promise key (Managed signing), generated once per channel (and once
    per rotation, under the rotation's Secret name)."""
    name = name or promise_key_secret_name(body["metadata"]["name"])
    seed = keys.private_bytes(keys.generate())
    stored = await _create_once(kube, body, name, {PROMISE_KEY: seed})
    return _promise_key(stored, body["metadata"]["namespace"], name)


def rotated_secret_name(channel: str, token: str) -> str:
    """The Secret of the key a rotation asked for with `token` (stable across retries)."""
    return f"{promise_key_secret_name(channel)}-{hashlib.sha256(token.encode()).hexdigest()[:8]}"


async def load_promise_key(
    kube: Kube, namespace: str, channel: str, name: str = ""
) -> Ed25519PrivateKey:
    name = name or promise_key_secret_name(channel)
    stored = await get_secret(kube, namespace, name)
    if stored is None:
        raise Blocked(
            "PromiseKeyMissing",
            f"Secret {namespace}/{name}, the channel's promise key, is gone; promises signed "
            "before stay claimable, but no new one can be signed. Restore the Secret from a "
            "backup, or let the channel close and open a new one.",
        )
    return _promise_key(stored, namespace, name)


def _promise_key(secret: Obj, namespace: str, name: str) -> Ed25519PrivateKey:
    try:
        return Ed25519PrivateKey.from_private_bytes(_data(secret, PROMISE_KEY))
    except ValueError as exc:
        raise Blocked(
            "PromiseKeyInvalid", f"Secret {namespace}/{name} does not hold a promise key: {exc}"
        ) from exc
