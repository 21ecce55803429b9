"""The operator's own HTTP API: where agents submit evidence and meters report usage.

Evidence and usage arrive here instead of through the Kubernetes API so that large blobs stay
out of etcd and no node can write its own verdict. Each area contributes its routes; this module
only owns the server's lifecycle and the caller identity check they share.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from cocoon.httpguard import GuardedAppRunner
from cocoon.kube import Kube

log = logging.getLogger(__name__)

RouteSetup = Callable[[web.Application], None]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name"


@dataclass(frozen=True)
class Caller:
    """Who a bearer token belongs to, as the API server's TokenReview says."""

    username: str
    node_name: str | None


class Unauthorized(Exception):
    """The token is missing, invalid or expired."""


async def review_token(kube: Kube, request: web.Request) -> Caller:
    """TokenReview the caller's bearer token; bound tokens carry the node their pod runs on."""
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer ") or len(header) <= len("Bearer "):
        raise Unauthorized("send `Authorization: Bearer <ServiceAccount token>`")
    review = await kube.create_cluster(
        "/apis/authentication.k8s.io/v1/tokenreviews",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": header[len("Bearer ") :]},
        },
    )
    status = review.get("status") or {}
    if not status.get("authenticated"):
        raise Unauthorized(f"token rejected: {status.get('error') or 'not authenticated'}")
    user = status.get("user") or {}
    extra = user.get("extra") or {}
    nodes = extra.get(NODE_NAME_EXTRA) or []
    return Caller(username=str(user.get("username", "")), node_name=nodes[0] if nodes else None)


@dataclass(frozen=True)
class ServerSettings:
    host: str = "0.0.0.0"  # noqa: S104 - in a pod; the chart's NetworkPolicy limits who reaches it
    port: int = 8443

    @classmethod
    def from_env(cls) -> ServerSettings:
        return cls(
            host=os.environ.get("COCOON_API_HOST", cls.host),
            port=int(os.environ.get("COCOON_API_PORT", str(cls.port))),
        )


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
        return error(400, "MalformedBody", "the request body could not be read (broken "
                     "framing or Content-Encoding); send it uncompressed, with a valid "
                     "Content-Length or chunked encoding")
    except Exception as exc:
        log.error("request failed", extra={"path": request.path, "error": type(exc).__name__})
        return error(500, "InternalError", "the operator failed handling the request and "
                     "changed nothing; retry, and report it if it persists")


def make_app(setups: list[RouteSetup]) -> web.Application:
    app = web.Application(client_max_size=8 * 1024 * 1024, middlewares=[answer_every_error])
    app.router.add_get("/healthz", _healthz)
    for setup in setups:
        setup(app)
    return app


def make_runner(app: web.Application) -> web.AppRunner:
    """Parser errors answered as JSON and logged by type only; 30 s to send headers."""
    return GuardedAppRunner(app, header_timeout=30, error_body=_error_body, access_log=None)


async def start(settings: ServerSettings, setups: list[RouteSetup]) -> web.AppRunner:
    runner = make_runner(make_app(setups))
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    log.info("operator API listening on %s:%d", settings.host, settings.port)
    return runner


async def _healthz(_: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def error(status: int, reason: str, message: str) -> web.Response:
    """Every refusal says what is wrong and what to do, in one JSON shape."""
    return web.json_response({"error": {"reason": reason, "message": message}}, status=status)
