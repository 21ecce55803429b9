"""Turn a library verdict into what AttestedNode.status says: per-device results, digest, times."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from cocoon.api.attestednode import DeviceResult, DeviceStatus
from cocoon.api.attestednode import Verdict as ApiVerdict
from cocoon.attestation.verdict import Verdict

_MEASUREMENT_CLAIMS = ("measurement", "mrTd")


def device_results(verdict: Verdict) -> list[DeviceResult]:
    results = []
    for d in verdict.devices:
        measurement = next(
            (str(d.claims[k]) for k in _MEASUREMENT_CLAIMS if isinstance(d.claims.get(k), str)),
            "",
        )
        results.append(
            DeviceResult(
                id=d.name,
                kind=str(d.tee),
                status=DeviceStatus.CONTRAINDICATED if d.failures else DeviceStatus.AFFIRMING,
                reason=d.reason or "",
                message=d.message[:1024],
                tcb_status=str(d.claims.get("tcbStatus", "")),
                measurement=measurement.lower(),
            )
        )
    return results


def measurements_digest(verdict: Verdict) -> str:
    """One SHA-256 over every device's claims, so a change of firmware or driver is visible."""
    material = json.dumps(
        {d.name: d.claims for d in verdict.devices}, sort_keys=True, default=str
    ).encode()
    return hashlib.sha256(material).hexdigest()


def api_verdict(verdict: Verdict) -> ApiVerdict:
    return ApiVerdict.VERIFIED if verdict.verified else ApiVerdict.REJECTED


def timestamp(unix: int) -> datetime:
    return datetime.fromtimestamp(unix, UTC)
