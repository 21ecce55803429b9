"""The admin port: Prometheus metrics, liveness and readiness, reached on the pod only (kubelet
probes, the chart's PodMonitor; the pool Service does not expose it, the NetworkPolicy admits
only the monitoring namespace). It serves nothing a tenant could use against another: the signed
usage reports (every channel's spend) go only to the operator, pushed by `operator_link`.

Readiness is Triton's, asked on loopback: the kubelet's prober (Go) cannot parse the data port's
RA-TLS certificate (its evidence extension's 2.25 OID has an arc beyond Go's 31-bit limit), so
the probe cannot go through the TLS listener; `serve` starts this port after that listener.
"""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cocoon import keys
from cocoon.meter.journal import Journal
from cocoon.meter.metrics import MeterMetrics
from cocoon.meter.sidecar import LIVENESS_PATH, READINESS_PATH
from cocoon.meter.usage_report import SignedUsageReport, UsageReport, UsageUnits, sign

TRITON_READY_PATH = "/v2/health/ready"
READY_TIMEOUT = aiohttp.ClientTimeout(total=3)


def usage_reports(
    journal: Journal, pool: str, key: Ed25519PrivateKey, channel: str | None = None
) -> list[SignedUsageReport]:
    """One signed report per channel in the journal (or just `channel`)."""
    public = keys.public_bytes(key).hex()
    issued = datetime.now(UTC).replace(microsecond=0)
    reports = []
    for name, totals in sorted(journal.totals.items()):
        if channel is not None and name != channel:
            continue
        report = UsageReport(
            meter_public_key=public,
            journal_id=journal.journal_id,
            pool=pool,
            channel=name,
            units=UsageUnits(**totals.units.as_dict()),
            cost_nanoton=str(totals.cost_nanoton),
            journal_sequence=journal.sequence,
            issued_at=issued,
        )
        reports.append(sign(report, key))
    return reports


async def upstream_ready(upstream_http: str) -> bool:
    """Triton answers 200 on its readiness path (`--strict-readiness`: every model ready)."""
    try:
        async with (
            aiohttp.ClientSession(timeout=READY_TIMEOUT) as session,
            session.get(upstream_http.rstrip("/") + TRITON_READY_PATH) as response,
        ):
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


def admin_app(journal: Journal, metrics: MeterMetrics, upstream_http: str) -> web.Application:
    async def get_metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def live(request: web.Request) -> web.Response:
        if not journal.alive:
            return web.json_response({"status": "journal writer stopped"}, status=500)
        return web.json_response({"status": "ok"})

    async def ready(request: web.Request) -> web.Response:
        if not await upstream_ready(upstream_http):
            return web.json_response({"status": "Triton is not ready"}, status=503)
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get(LIVENESS_PATH, live)
    app.router.add_get(READINESS_PATH, ready)
    return app
