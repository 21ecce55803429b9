"""The operator's own HTTP API: where agents submit evidence and meters report usage.

Evidence and usage arrive here instead of through the Kubernetes API so that large blobs stay
out of etcd and no node can write its own verdict. Each area contributes its routes; this module
only owns the server's lifecycle and the caller identity check they share.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from cocoon.controllers import api_guard
from cocoon.httpguard import GuardedAppRunner
from cocoon.kube import Kube

log = logging.getLogger(__name__)

RouteSetup = Callable[[web.Application], None]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name"
# Agents and meters present projected tokens for this audience only: a token the API server
# would accept (or one meant for any other service) is refused by the operator, and back.
AUDIENCE = "cocoon-operator"


@dataclass(frozen=True)
class Caller:
    """Who a bearer token belongs to, as the API server's TokenReview says."""

    username: str
    node_name: str | None
    user: Mapping[str, Any] = field(default_factory=dict)


class Unauthorized(Exception):
    """The token is missing, invalid or expired."""


async def review_token(
    kube: Kube, request: web.Request, audiences: list[str] | None = None
) -> Caller:
    """TokenReview the caller's bearer token; bound tokens carry the node their pod runs on.

    With `audiences`, the token must have been issued for one of them (a projected token with
    that audience), so a token meant for another service is refused here."""
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer ") or len(header) <= len("Bearer "):
        raise Unauthorized("send `Authorization: Bearer <ServiceAccount token>`")
    spec: dict[str, Any] = {"token": header[len("Bearer ") :]}
    if audiences:
        spec["audiences"] = audiences
    review = await kube.create_cluster(
        "/apis/authentication.k8s.io/v1/tokenreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec},
    )
    status = review.get("status") or {}
    if not status.get("authenticated"):
        raise Unauthorized(f"token rejected: {status.get('error') or 'not authenticated'}")
    if audiences and not set(audiences) & set(status.get("audiences") or []):
        raise Unauthorized(f"the token is not for audience {audiences[0]}")
    user = status.get("user") or {}
    extra = user.get("extra") or {}
    nodes = extra.get(NODE_NAME_EXTRA) or []
    return Caller(
        username=str(user.get("username", "")), node_name=nodes[0] if nodes else None, user=user
    )


@dataclass(frozen=True)
class ServerSettings:
    host: str = "0.0.0.0"  # noqa: S104 - in a pod; the chart's NetworkPolicy limits who reaches it
    port: int = 8443
    # the chart's serving certificate; agents and meters verify it against the chart's CA
    tls_cert: str | None = None
    tls_key: str | None = None

    @classmethod
    def from_env(cls) -> ServerSettings:
        return cls(
            host=os.environ.get("COCOON_API_HOST", cls.host),
            port=int(os.environ.get("COCOON_API_PORT", str(cls.port))),
            tls_cert=os.environ.get("COCOON_API_TLS_CERT") or None,
            tls_key=os.environ.get("COCOON_API_TLS_KEY") or None,
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls_cert:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.tls_cert, self.tls_key)
        return context


def _error_body(status: int, code: str, message: str) -> bytes:
    return json.dumps({"error": {"reason": code, "message": message}}).encode()


@web.middleware
async def answer_every_error(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A body that cannot be read (bad gzip, broken chunking) is a 400; any other failure is a
    JSON 500 logged by type only (exception messages may quote what the caller sent)."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except (HttpProcessingError, RequestPayloadError):
        return error(
            400,
            "MalformedBody",
            "the request body could not be read (broken "
            "framing or Content-Encoding); send it uncompressed, with a valid "
            "Content-Length or chunked encoding",
        )
    except Exception as exc:
        # the type, and for API errors their HTTP status and reason: never a message that could
        # echo a request or a token
        log.error(
            "request failed",
            extra={
                "path": request.path,
                "error": type(exc).__name__,
                "status": getattr(exc, "status", None),
                "reason": str(getattr(exc, "reason", ""))[:80],
                "at": _where(exc),
            },
        )
        return error(
            500,
            "InternalError",
            "the operator failed handling the request and "
            "changed nothing; retry, and report it if it persists",
        )


def make_app(setups: list[RouteSetup], limits: api_guard.Limits | None = None) -> web.Application:
    """Rate limit and body size first (api_guard), then the handlers, every error as JSON."""
    app = web.Application(
        client_max_size=max(api_guard.BODY_LIMITS.values()),
        middlewares=[api_guard.middleware(limits or api_guard.Limits()), answer_every_error],
    )
    app.router.add_get("/healthz", _healthz)
    for setup in setups:
        setup(app)
    return app


def make_runner(app: web.Application) -> web.AppRunner:
    """Parser errors answered as JSON and logged by type only; 30 s to send headers."""
    return GuardedAppRunner(app, header_timeout=30, error_body=_error_body, access_log=None)


async def start(settings: ServerSettings, setups: list[RouteSetup]) -> web.AppRunner:
    runner = make_runner(make_app(setups, api_guard.Limits.from_env()))
    await runner.setup()
    tls = settings.ssl_context()
    await web.TCPSite(runner, settings.host, settings.port, ssl_context=tls).start()
    log.info(
        "operator API listening on %s:%d (%s)",
        settings.host,
        settings.port,
        "TLS" if tls else "plain HTTP",
    )
    return runner


async def _healthz(_: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def error(status: int, reason: str, message: str) -> web.Response:
    """Every refusal says what is wrong and what to do, in one JSON shape."""
    return web.json_response({"error": {"reason": reason, "message": message}}, status=status)


def _where(exc: BaseException) -> str:
    """file:line of the innermost frame in our own code, to find a failure without its text."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/cocoon/" in f.filename]
    return f"{frames[-1].filename.rsplit('/cocoon/', 1)[-1]}:{frames[-1].lineno}" if frames else ""
