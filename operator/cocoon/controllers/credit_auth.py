"""Who may read a pool's credit: a live registered meter of that pool, proven by a signed
request (`cocoon.signed_request`), checked in memory before any Kubernetes call.

401 for an unsigned or malformed request, 403 for a bad, stale or replayed signature or a key
that is not a meter of the pool, 429 beyond `api_guard.Limits.per_key_rate` a second per key.
A public key alone (published in InferencePool status) reads nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from aiohttp import web

from cocoon import signed_request
from cocoon.api.inferencepool import MeterRecord
from cocoon.controllers import api_guard, views


@dataclass
class SignedRequests:
    """What the credit route remembers between requests: nonces seen, and each key's bucket."""

    replays: signed_request.ReplayGuard = field(default_factory=signed_request.ReplayGuard)
    per_key: api_guard.TokenBuckets = field(
        default_factory=lambda: api_guard.TokenBuckets(
            api_guard.Limits.per_key_rate, api_guard.Limits.per_key_burst
        )
    )


def credit_caller(
    request: web.Request, gate: SignedRequests, pool_ref: str
) -> tuple[MeterRecord, list[MeterRecord]] | web.Response:
    """The asking meter's record and the pool's live records, or the refusal to answer."""
    now = time.time()
    try:
        signed = signed_request.parse(request.headers.get(signed_request.HEADER))
        signed_request.verify(signed, request.method, request.path_qs, now=now)
    except signed_request.SignatureRefused as exc:
        status = 401 if exc.reason in {"unsigned", "malformed_signature"} else 403
        return api_guard.refuse(api_guard.Refusal(exc.reason), status, "Unauthenticated", str(exc))
    records = views.of(request).meters(pool_ref)
    meter = next((r for r in records if r.receipt_public_key == signed.key_hex), None)
    if meter is None:
        return api_guard.refuse(
            api_guard.Refusal.UNREGISTERED,
            403,
            "Unattested",
            f"the signing key is not a registered meter of {pool_ref}; only a meter of the "
            "pool, registered with its evidence, may read the pool's credit",
        )
    try:
        gate.replays.admit(signed, now=now)
    except signed_request.SignatureRefused as exc:
        return api_guard.refuse(api_guard.Refusal(exc.reason), 403, "Unauthenticated", str(exc))
    wait = gate.per_key.take(signed.key_hex)
    if wait:
        return api_guard.too_many(wait, "this meter key")
    return meter, records
