"""The operator's HTTP API (the real aiohttp server it runs, over TCP) under hostile input:
every answer is JSON, never a 5xx, and no credential reaches a log line."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import logging
import socket
import threading
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import kopf
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cocoon import keys, logs
from cocoon.controllers import httpapi, usage_api
from cocoon.devstack.process import free_port
from cocoon.kube import INFERENCE_POOLS, PAYMENT_CHANNELS
from cocoon.meter import usage_report

from .conftest import NS, POOL, PRICE, channel_body, journal_of, meter_record
from .fakekube import FakeKube, views_of

SECRET = "zebracanary7731-token"
METER_KEY = keys.generate()


@pytest.fixture
def operator_api() -> Iterator[int]:
    """The operator's API server (httpapi.make_app/make_runner) on its own loop and thread."""
    kube = FakeKube()
    kube.put(INFERENCE_POOLS, {
        "metadata": {"name": POOL, "namespace": NS}, "spec": {},
        "status": {"meters": [meter_record(METER_KEY)]},
    })
    kube.put(PAYMENT_CHANNELS, channel_body("ch", {"poolName": POOL}) | {
        "status": {"maxPrice": PRICE}})
    memo = kopf.Memo()
    memo.kube = kube
    memo.views = views_of(kube)
    port = free_port()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    runner = httpapi.make_runner(httpapi.make_app(
        [lambda app: usage_api.setup_routes(app, memo, lambda ns, name: None)]
    ))

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    yield port
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def _post(port: int, path: str, body: bytes, headers: dict[str, str] | None = None
          ) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _raw(port: int, data: bytes) -> tuple[int, Any]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert b"application/json" in head.lower(), received[:300]
    return int(head.split()[1]), json.loads(body)


def _report(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "meter_public_key": keys.public_bytes(METER_KEY).hex(), "pool": f"{NS}/{POOL}",
        "journal_id": journal_of(METER_KEY),
        "channel": f"{NS}/ch",
        "units": usage_report.UsageUnits(requests=1, input_tokens=0, output_tokens=10),
        "cost_nanoton": "10", "journal_sequence": 1, "issued_at": datetime.now(UTC),
        "format": usage_report.FORMAT,
    }
    # model_construct: a forged report the model itself would refuse to build.
    report = usage_report.UsageReport.model_construct(**(fields | overrides))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pydantic: "serialized value may not be..."
        return usage_report.sign(report, METER_KEY).to_api()


@pytest.mark.parametrize("sequence", [2**53, 2**63])
def test_out_of_range_journal_sequence_is_a_json_400_not_a_500(
    operator_api: int, sequence: int
) -> None:
    status, answer = _post(operator_api, usage_api.REPORTS_PATH,
                           json.dumps(_report(journal_sequence=sequence)).encode())
    assert status == 400, answer
    assert answer["error"]["reason"] == "Malformed"
    assert "journalSequence" in answer["error"]["message"]
    status, answer = _post(operator_api, usage_api.REPORTS_PATH, json.dumps(_report()).encode())
    assert status == 200, answer


def test_a_report_for_a_deleted_channel_is_gone(operator_api: int) -> None:
    status, answer = _post(operator_api, usage_api.REPORTS_PATH,
                           json.dumps(_report(channel=f"{NS}/deleted")).encode())
    assert status == 410
    assert "stop reporting" in answer["error"]["message"]


def test_malformed_http_gets_json_and_logs_no_credential(
    operator_api: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    path = usage_api.REPORTS_PATH
    attacks = [
        f"POST {path} HTTP/1.1\r\nHost: o\r\nAuthorization: Bearer {SECRET}\x00\r\n"
        "Content-Length: 0\r\n\r\n",
        f"POST {path} HTTP/1.1\r\nHost: o\r\nTransfer-Encoding: chunked\r\n\r\n"
        f'{{"report": "{SECRET}"}}',
        f"POST {path} HTTP/1.1\r\nHost: o\r\nX-Pad: {SECRET * 1000}\r\n\r\n",
    ]
    for attack in attacks:
        status, answer = _raw(operator_api, attack.encode())
        assert 400 <= status < 500, answer
        assert answer["error"]["message"]
    status, answer = _post(operator_api, path, b"\x1f\x8b\x08\x00garbage" + SECRET.encode(),
                           {"Content-Encoding": "gzip"})
    assert status == 400, answer
    assert answer["error"]["reason"] in {"Malformed", "MalformedBody"}
    formatter = logs.JsonFormatter()
    lines = [formatter.format(r) for r in caplog.records]
    assert any("request refused by the HTTP layer" in line for line in lines)
    assert all(SECRET not in line for line in lines)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=10,
)
REPORT_LIKE = st.fixed_dictionaries({}, optional={
    "journal_sequence": st.integers(-(2**70), 2**70) | JSON,
    "cost_nanoton": st.text(max_size=30) | JSON,
    "channel": st.text(max_size=30),
    "pool": st.text(max_size=30),
}).map(lambda overrides: json.dumps(_report(**overrides)).encode())
BODIES = st.one_of(
    st.binary(max_size=300), JSON.map(lambda d: json.dumps(d).encode()), REPORT_LIKE,
    st.binary(max_size=100).map(gzip.compress),
)
PATHS = st.sampled_from([
    usage_api.REPORTS_PATH, f"/payments/v1/channels/{NS}/ch/promises",
    f"/payments/v1/channels/{NS}/none/promises", "/payments/v1/channels/x/%00/promises",
])


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=PATHS, body=BODIES, gzip_header=st.booleans())
def test_no_input_gets_a_5xx(operator_api: int, path: str, body: bytes, gzip_header: bool
                             ) -> None:
    headers = {"Content-Encoding": "gzip"} if gzip_header else {}
    status, answer = _post(operator_api, path, body, headers)
    assert status < 500, answer
    assert status == 200 or answer["error"]["message"]
