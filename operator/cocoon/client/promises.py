"""Client signing: the payer promises exactly what its verified receipts add up to.

In Client signing mode the operator never holds the payer's key; the payer signs cumulative
promises itself, and the provider can claim no more than the payer signed. This module makes
the receipts the payer holds the only basis for a promise: the next cumulative amount is the
total of the channel's receipts that verify against the keys the caller attested (never what
the operator says is owed), capped at the channel's deposit, and only when it raises the last
promise. The provider's side may serve at most `creditWindow` beyond the latest promise, so
that window is all a payer who stops promising can leave unpaid.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from typing import Any

import httpx2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cocoon import keys
from cocoon.client.store import Report
from cocoon.ton import promises
from cocoon.ton.tvm import Address


class PromiseError(Exception):
    """No promise can be made from what is given; the message says what is missing."""


@dataclass(frozen=True)
class ChannelTerms:
    """What a promise binds to, from the PaymentChannel's status (`kubectl get pch -o json`)."""

    namespace: str
    name: str
    address: str
    channel_id: int
    payer_public_key: str
    deposited: int
    promised: int

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def from_channel(cls, body: dict[str, Any]) -> ChannelTerms:
        meta, status = body.get("metadata") or {}, body.get("status") or {}
        params = status.get("parameters") or {}
        if not status.get("channelId") or not params.get("payerPublicKey"):
            raise PromiseError(
                f"PaymentChannel {meta.get('namespace')}/{meta.get('name')} has no channel id "
                "yet; wait until the operator prepared it (status.channelId)"
            )
        latest = status.get("latestPromise") or {}
        return cls(
            namespace=str(meta["namespace"]),
            name=str(meta["name"]),
            address=str(status["address"]),
            channel_id=int(status["channelId"], 16),
            payer_public_key=str(params["payerPublicKey"]),
            deposited=int(status.get("deposited") or 0),
            promised=int(latest.get("cumulative") or 0),
        )


def next_promise(report: Report, terms: ChannelTerms) -> int | None:
    """The cumulative amount to sign: the verified receipts' total for this channel, within the
    deposit; None when that does not raise the last promise. A store with any receipt that
    fails verification backs no promise at all."""
    if not report.ok:
        raise PromiseError(
            "the receipt store has receipts that do not verify: "
            + "; ".join(report.problems[:3])
            + " (run `cocoon client receipts verify`)"
        )
    amount = min(report.channel_cost(terms.ref), terms.deposited)
    return amount if amount > terms.promised else None


def sign(key: Ed25519PrivateKey, terms: ChannelTerms, cumulative: int) -> promises.Promise:
    if keys.public_bytes(key).hex() != terms.payer_public_key:
        raise PromiseError(
            f"this key is not the payer key of {terms.ref} "
            f"(status.parameters.payerPublicKey {terms.payer_public_key[:16]}...)"
        )
    return promises.sign(key, Address(terms.address), terms.channel_id, cumulative)


def submit(
    operator_url: str, terms: ChannelTerms, promise: promises.Promise,
    verify: ssl.SSLContext | bool = True,
) -> dict[str, Any]:
    """POST the promise to the operator's promises route; its claim uses it."""
    url = (
        f"{operator_url.rstrip('/')}/payments/v1/channels/{terms.namespace}/{terms.name}/promises"
    )
    body = {"cumulative": str(promise.cumulative), "signature": promise.signature.hex()}
    with httpx2.Client(verify=verify, timeout=30) as http:
        response = http.post(url, json=body)
    try:
        answer: dict[str, Any] = response.json()
    except json.JSONDecodeError:
        answer = {"error": {"reason": "NotJson", "message": response.text[:300]}}
    if response.status_code != 200:
        error = answer.get("error") or {}
        raise PromiseError(
            f"the operator refused the promise ({response.status_code} "
            f"{error.get('reason')}): {error.get('message')}"
        )
    return answer
