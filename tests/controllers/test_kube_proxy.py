"""The API server's proxy is decided from the environment once, at connect, and no request
consults the environment again (the library's session did, through two worker threads each)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp.client
import pytest
from aiohttp import web
from kubernetes_asyncio import client

from cocoon.kube import NODES, Kube

PROXY_VARS = ("https_proxy", "http_proxy", "all_proxy", "no_proxy")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)
    yield monkeypatch


def api_for(server: str) -> client.ApiClient:
    configuration = client.Configuration()
    configuration.host = server
    return client.ApiClient(configuration)


@pytest.mark.parametrize(
    ("env", "proxy"),
    [
        ({}, None),
        ({"HTTPS_PROXY": "http://proxy.corp:3128"}, "http://proxy.corp:3128"),
        ({"https_proxy": "http://proxy.corp:3128"}, "http://proxy.corp:3128"),
        # NO_PROXY names the API server: straight to it
        ({"HTTPS_PROXY": "http://proxy.corp:3128", "NO_PROXY": "10.96.0.1"}, None),
        # a proxy for another scheme is not the API server's
        ({"HTTP_PROXY": "http://proxy.corp:3128"}, None),
    ],
)
async def test_proxy_from_the_environment_once(
    clean_env: pytest.MonkeyPatch, env: dict[str, str], proxy: str | None
) -> None:
    for var, value in env.items():
        clean_env.setenv(var, value)
    api = api_for("https://10.96.0.1:443")
    try:
        Kube(api)
        assert api.rest_client.proxy == proxy
        assert api.rest_client.pool_manager.trust_env is False
    finally:
        await api.close()


@pytest.fixture
async def server() -> AsyncIterator[str]:
    async def nodes(_: web.Request) -> web.Response:
        return web.json_response({"kind": "NodeList", "items": []})

    app = web.Application()
    app.router.add_get("/api/v1/nodes", nodes)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_requests_do_not_look_up_the_environment(
    clean_env: pytest.MonkeyPatch, server: str
) -> None:
    lookups: list[object] = []
    original = aiohttp.client.get_env_proxy_for_url  # type: ignore[attr-defined]

    def counted(url: object) -> object:
        lookups.append(url)
        return original(url)  # type: ignore[arg-type]

    clean_env.setattr(aiohttp.client, "get_env_proxy_for_url", counted)
    clean_env.setenv("NO_PROXY", "127.0.0.1")
    kube = Kube(api_for(server))
    try:
        for _ in range(3):
            assert await kube.list(NODES) == []
    finally:
        await kube.close()
    assert lookups == []
