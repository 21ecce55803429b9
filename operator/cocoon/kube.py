"""One small async Kubernetes client for every controller: server-side apply, status, get, list.

Generic over resources (group, version, plural) so controllers share one code path for built-in
kinds and our CRDs; built on kubernetes_asyncio for kubeconfig and in-cluster authentication.
"""

from __future__ import annotations

import builtins
import json
import os
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client import Counter

FIELD_MANAGER = "cocoon-operator"
Obj = dict[str, Any]

# bounded labels: an HTTP verb and a resource plural (with /subresource) the operator uses
REQUESTS = Counter(
    "cocoon_kube_requests_total",
    "Requests the operator made to the Kubernetes API server, by verb and resource.",
    ["verb", "resource"],
)


def resource_of(path: str) -> str:
    """`nodes`, `attestednodes/status`...: the resource a request path addresses (never a name,
    so the metric's labels stay bounded)."""
    parts = path.strip("/").split("/")
    rest = parts[2:] if parts[0] == "api" else parts[3:]
    if len(rest) >= 3 and rest[0] == "namespaces":
        rest = rest[2:]
    if not rest:
        return "unknown"
    return rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        """The API path; a namespace or name no object can have (a caller's path parameter that
        would steer the URL: `/`, `?`, `%`, `..`) is NotFound, never sent."""
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{_segment(namespace)}"
        base += f"/{self.plural}"
        return base + (f"/{_segment(name)}" if name else "")

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


DEPLOYMENTS = Kind("apps", "v1", "deployments")
SERVICES = Kind("", "v1", "services")
PODS = Kind("", "v1", "pods")
NODES = Kind("", "v1", "nodes", namespaced=False)
CONFIGMAPS = Kind("", "v1", "configmaps")
SECRETS = Kind("", "v1", "secrets")
EVENTS = Kind("", "v1", "events")
INFERENCE_POOLS = Kind("cocoon.dev", "v1alpha1", "inferencepools")
ATTESTED_NODES = Kind("cocoon.dev", "v1alpha1", "attestednodes", namespaced=False)
ATTESTATION_POLICIES = Kind("cocoon.dev", "v1alpha1", "attestationpolicies", namespaced=False)
PAYMENT_CHANNELS = Kind("cocoon.dev", "v1alpha1", "paymentchannels")


class NotFound(Exception):
    """The object does not exist."""


_NOT_IN_NAMES = frozenset("/?#%\\")


def _segment(value: str) -> str:
    if value in (".", "..") or any(c in _NOT_IN_NAMES or not c.isprintable() or c.isspace()
                                   for c in value):
        raise NotFound("no object can have this name (it would change the API path)")
    return value


class Forbidden(Exception):
    """RBAC does not let the operator do this (e.g. Secrets in a namespace not opted in)."""


def api_message(exc: BaseException) -> str:
    """The API server's own message for a failed call (its Status `message`), for conditions."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ApiException):
        cause = cause.__cause__
    if cause is None:
        return type(exc).__name__
    try:
        message = json.loads(cause.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or f"{cause.status} {cause.reason}")


def settle_proxy(api: client.ApiClient) -> None:
    """Decide the API server's proxy from the environment (HTTPS_PROXY, NO_PROXY) once, as
    client-go does, and have the session stop consulting it per request.

    The client library's aiohttp session trusts the environment, which costs every request two
    worker-thread hops (a ~/.netrc read and a proxy lookup): 15% of the operator's CPU while it
    attests a fleet."""
    rest = api.rest_client
    server = urlsplit(str(api.configuration.host))
    proxy = urllib.request.getproxies().get(server.scheme)
    if not rest.proxy and proxy and not urllib.request.proxy_bypass(server.hostname or ""):
        rest.proxy = proxy
    rest.pool_manager._trust_env = False


class Kube:
    """A connection to the API server; create with `await Kube.connect()`."""

    def __init__(self, api: client.ApiClient) -> None:
        self._api = api
        settle_proxy(api)

    @classmethod
    async def connect(cls, kubeconfig: str | None = None) -> Kube:
        """In a pod, its ServiceAccount; elsewhere `kubeconfig` or $KUBECONFIG as it is *now*
        (the client library reads the variable once at import, too early for tools and tests)."""
        path = kubeconfig or os.environ.get("KUBECONFIG")
        if path is None:
            try:
                config.load_incluster_config()  # type: ignore[no-untyped-call]
                return cls(client.ApiClient())
            except config.ConfigException:
                pass
        configuration = client.Configuration()
        await config.load_kube_config(config_file=path, client_configuration=configuration)
        return cls(client.ApiClient(configuration))

    async def close(self) -> None:
        await self._api.close()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> Obj:
        REQUESTS.labels(method, resource_of(path)).inc()
        try:
            result = await self._api.call_api(
                path,
                method,
                query_params=query or [],
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body,
                response_types_map={200: "object", 201: "object", 202: "object"},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
            )
        except ApiException as exc:
            if exc.status == 404:
                raise NotFound(path) from exc
            if exc.status == 403:
                raise Forbidden(path) from exc
            raise
        return result if isinstance(result, dict) else {}

    async def get(self, kind: Kind, name: str, namespace: str | None = None) -> Obj:
        return await self._call("GET", kind.path(namespace, name))

    async def get_or_none(self, kind: Kind, name: str, namespace: str | None = None) -> Obj | None:
        try:
            return await self.get(kind, name, namespace)
        except NotFound:
            return None

    async def list(
        self, kind: Kind, namespace: str | None = None, *, labels: str = "", fields: str = ""
    ) -> list[Obj]:
        query = [(k, v) for k, v in (("labelSelector", labels), ("fieldSelector", fields)) if v]
        try:
            path = kind.path(namespace)
        except NotFound:
            return []  # a namespace that cannot exist holds nothing
        result = await self._call("GET", path, query=query)
        items: list[Obj] = result.get("items", [])
        return items

    async def list_versioned(self, kind: Kind) -> tuple[builtins.list[Obj], str]:
        """Every object of `kind` in every namespace, and the list's resourceVersion (where a
        watch of the same kind starts)."""
        result = await self._call("GET", kind.path())
        return list(result.get("items") or []), str((result.get("metadata") or {}).get(
            "resourceVersion", ""))

    async def watch(
        self, kind: Kind, resource_version: str, timeout_seconds: int = 300
    ) -> AsyncIterator[Obj]:
        """Watch events (`{"type", "object"}`) of `kind` in every namespace after
        `resource_version`, until the server ends the stream (at most `timeout_seconds`)."""
        path = kind.path()
        REQUESTS.labels("WATCH", resource_of(path)).inc()
        response = await self._api.call_api(
            path,
            "GET",
            query_params=[
                ("watch", "true"),
                ("resourceVersion", resource_version),
                ("allowWatchBookmarks", "true"),
                ("timeoutSeconds", str(timeout_seconds)),
            ],
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=timeout_seconds + 30,
        )
        try:
            if response.status != 200:
                raise ApiException(status=response.status, reason=response.reason)
            while line := await response.content.readline():
                event = json.loads(line)
                if isinstance(event, dict):
                    yield event
        finally:
            response.release()

    async def apply(self, kind: Kind, obj: Obj) -> Obj:
        """Server-side apply with our field manager; we own what we render, nothing else."""
        meta = obj["metadata"]
        return await self._call(
            "PATCH",
            kind.path(meta.get("namespace"), meta["name"]),
            body=obj,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )

    async def patch(
        self,
        kind: Kind,
        name: str,
        patch: Obj,
        namespace: str | None = None,
        *,
        subresource: str = "",
    ) -> Obj:
        path = kind.path(namespace, name) + (f"/{subresource}" if subresource else "")
        return await self._call(
            "PATCH", path, body=patch, content_type="application/merge-patch+json"
        )

    async def patch_ops(self, kind: Kind, name: str, ops: builtins.list[Obj]) -> Obj:
        """A JSON patch (RFC 6902): its `test` operations guard exactly the fields a write
        depends on, where a merge patch can guard only the whole object's resourceVersion.
        A failed test answers 422."""
        return await self._call(
            "PATCH", kind.path(None, name), body=ops, content_type="application/json-patch+json"
        )

    async def replace(self, kind: Kind, obj: Obj) -> Obj:
        """PUT the whole object; its resourceVersion makes it conditional (409 when stale)."""
        meta = obj["metadata"]
        return await self._call("PUT", kind.path(meta.get("namespace"), meta["name"]), body=obj)

    async def create(self, kind: Kind, obj: Obj) -> Obj:
        return await self._call("POST", kind.path(obj["metadata"].get("namespace")), body=obj)

    async def create_cluster(self, path: str, obj: Obj) -> Obj:
        """POST to a non-resource-style path (TokenReview, SubjectAccessReview)."""
        return await self._call("POST", path, body=obj)

    async def delete(self, kind: Kind, name: str, namespace: str | None = None) -> None:
        try:
            await self._call("DELETE", kind.path(namespace, name))
        except NotFound:
            return
