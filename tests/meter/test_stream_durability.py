"""Streamed charges survive kill -9, and a long-lived gRPC stream is charged request by request.

A real meter process in front of a real Triton: the client reads some tokens, the meter is
killed with SIGKILL, the client takes whatever bytes had already left; the reopened journal must
charge every token the client received (counted as the meter counts them), and at most the one
chunk the meter had journaled but not yet written.
"""

import json
import queue
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import aiohttp
import grpc
import pytest
from conftest import AUTH, CHANNEL, CREDENTIAL, PRICE
from test_grpc_proxy import _tokens_request
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from cocoon.meter.credits import credential_hash
from cocoon.meter.journal import Journal, read_charges
from cocoon.meter.pricing import Units
from cocoon.meter.process import MeterProcess, start_meter, write_credits
from cocoon.meter.usage import SseMeter, UsageCounter, count_event
from cocoon.meter.usage_report import verify

pytestmark = pytest.mark.triton
GRPC_AUTH = (("authorization", f"Bearer {CREDENTIAL}"),)
BEFORE_KILL = 12  # tokens the client reads before the meter is killed
PACE = {"max_tokens": 400, "delay_ms": 25}  # ten seconds of tokens: the kill lands mid-stream


@pytest.fixture
def killable(triton_server, tmp_path):
    write_credits(tmp_path / "credits.json", {CREDENTIAL: (CHANNEL, 10**15)})
    process = start_meter(triton_server, tmp_path, price=PRICE)
    yield process
    process.stop(signal.SIGKILL)


def _reopened_charge(meter: MeterProcess, delivered: Units):
    """The one row the cut stream left, as the next meter start settles it."""
    (row,) = read_charges(meter.journal)
    assert row.outcome == "streaming"  # written while streaming, never settled
    journal = Journal(meter.journal)
    try:
        assert journal.interrupted == 1
        (charge,) = read_charges(meter.journal)
        assert charge.outcome == "interrupted"
        assert journal.spent(CHANNEL) == charge.cost_nanoton == PRICE.cost(charge.units)
    finally:
        journal.close()
    got = charge.units
    assert (got.requests, got.input_tokens) == (delivered.requests, delivered.input_tokens)
    # every delivered token is charged; at most the chunk journaled but not yet sent is extra
    assert delivered.output_tokens <= got.output_tokens <= delivered.output_tokens + 1
    return charge


async def test_kill_9_mid_sse_stream_keeps_every_delivered_token(killable):
    body = {"text_input": "a b c", **PACE}
    counter, events = UsageCounter(streaming=True), SseMeter()
    async with aiohttp.ClientSession() as session, session.post(
        f"{killable.http_url}/v2/models/tokens/generate_stream", json=body, headers=AUTH
    ) as response:
        assert response.status == 200
        request_id = response.headers["Cocoon-Request-Id"]
        killed = False
        try:
            async for chunk in response.content.iter_any():
                for event in events.split(chunk):
                    count_event(counter, event)
                if not killed and counter.delivered >= BEFORE_KILL:
                    killable.stop(signal.SIGKILL)  # then read what had already left
                    killed = True
        except aiohttp.ClientPayloadError:
            pass
    assert killed and not counter.failed
    delivered = counter.units()
    assert delivered.output_tokens >= BEFORE_KILL
    charge = _reopened_charge(killable, delivered)
    assert charge.request_id == request_id


def test_kill_9_mid_grpc_stream_keeps_every_delivered_token(killable):
    delivered = UsageCounter(streaming=True)
    with grpc.insecure_channel(killable.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        responses = stub.ModelStreamInfer(iter([_tokens_request("a b c", **PACE)]),
                                          metadata=GRPC_AUTH)
        with pytest.raises(grpc.RpcError) as exc:
            for message in responses:
                assert not message.error_message
                delivered.add_response({})
                if delivered.delivered == BEFORE_KILL:
                    killable.stop(signal.SIGKILL)
        assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
    _reopened_charge(killable, delivered.units())


class _Operator(ThreadingHTTPServer):
    """A stand-in for the operator's usage API: grants credit, keeps the signed reports."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _OperatorHandler)
        self.reports: list[dict] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def reported_requests(self) -> int:
        """Requests in the latest report of the channel (reports are cumulative)."""
        latest = [verify(r) for r in self.reports]
        return max((r.units.requests for r in latest if r.channel == CHANNEL), default=0)


class _OperatorHandler(BaseHTTPRequestHandler):
    server: _Operator

    def _answer(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        entry = {"channel": CHANNEL, "credentialSha256": credential_hash(CREDENTIAL),
                 "creditLimitNanoton": str(10**15)}
        self._answer({"channels": [entry]})

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.server.reports.append(json.loads(self.rfile.read(length)))
        self._answer({"accepted": True})

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def reporting_meter(triton_server, tmp_path):
    """A meter that pushes its signed usage reports every 100 ms to a stand-in operator."""
    operator = _Operator()
    threading.Thread(target=operator.serve_forever, daemon=True).start()
    process = start_meter(triton_server, tmp_path, price=PRICE, operator_url=operator.url,
                          extra_args=("--report-interval=0.1",))
    yield process, operator
    process.stop()
    operator.shutdown()


def test_each_request_on_an_open_grpc_stream_is_charged_while_it_stays_open(reporting_meter):
    """As perf_analyzer does: one stream, many requests; each is journaled and reported as
    soon as its last response went by, long before the stream closes."""
    meter, operator = reporting_meter
    sending: queue.Queue = queue.Queue()
    requests = iter(sending.get, None)
    k = 4
    with grpc.insecure_channel(meter.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        responses = stub.ModelStreamInfer(requests, metadata=GRPC_AUTH)
        finals = 0
        for i in range(k):
            request = _tokens_request("x y", 3)
            request.id = f"client-{i}"
            sending.put(request)
            while True:  # this request's three responses, the last one final
                message = next(responses)
                assert message.infer_response.id == f"client-{i}"
                if message.infer_response.parameters["triton_final_response"].bool_param:
                    finals += 1
                    break
            # the stream is still open: the request is journaled, and the signed report counts
            # it (once its row is fsynced, a moment after it is written)
            _wait_for(lambda i=i: len(_settled(meter)) == i + 1
                      and operator.reported_requests() == i + 1)
        charges = _settled(meter)
        assert [c.units for c in charges] == [Units(1, 2, 3)] * k
        assert len({c.request_id for c in charges}) == k
        sending.put(None)
        assert list(responses) == []
        trailing = responses.trailing_metadata()
    assert finals == k
    ids = [value for key, value in trailing if key == "cocoon-request-id"]
    assert sorted(ids) == sorted(c.request_id for c in charges)
    assert Units.parse_header(dict(trailing)["cocoon-units"]) == Units(k, 2 * k, 3 * k)


def _settled(meter: MeterProcess) -> list:
    return [c for c in read_charges(meter.journal) if c.outcome == "ok"]


def _wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        threading.Event().wait(0.02)
