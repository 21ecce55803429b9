"""Property-based fuzzing of the running meter in front of real Triton: whatever a caller sends
to a metered route, the answer is JSON with a 2xx/4xx status, and the meter lives. The one 5xx
allowed is 502 `ModelError`: the model itself failed on a well-formed request."""

import gzip
import http.client
import json

import pytest
from conftest import CREDENTIAL
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.triton

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
ANY_VALUE = JSON | st.integers(min_value=-(2**80), max_value=2**80)
GENERATE_FIELDS = st.fixed_dictionaries({}, optional={
    "text_input": ANY_VALUE, "max_tokens": st.integers(-3, 8) | ANY_VALUE.filter(
        lambda v: not isinstance(v, int) or v < 0), "parameters": ANY_VALUE,
})
INFER_FIELDS = st.fixed_dictionaries({}, optional={
    "inputs": st.lists(st.fixed_dictionaries({}, optional={
        "name": st.sampled_from(["INPUT0", "INPUT1", "x"]) | ANY_VALUE,
        "shape": st.lists(st.integers(-2, 2**40), max_size=3) | ANY_VALUE,
        "datatype": st.sampled_from(["FP32", "INT64", "BYTES", "??"]) | ANY_VALUE,
        "data": st.lists(st.floats(allow_nan=False) | st.integers(), max_size=20) | ANY_VALUE,
        "parameters": ANY_VALUE,
    }), max_size=3),
    "outputs": ANY_VALUE,
    "parameters": ANY_VALUE,
})


def _encoded(document: object) -> bytes:
    return json.dumps(document).encode()


BODIES = st.one_of(
    st.binary(max_size=512),
    JSON.map(_encoded),
    GENERATE_FIELDS.map(_encoded),
    INFER_FIELDS.map(_encoded),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
)
PATHS = st.sampled_from([
    "/v2/models/tokens/generate", "/v2/models/tokens/generate_stream",
    "/v2/models/add/infer", "/v2/models/tokens/infer", "/v2/models/nosuch/generate",
    "/v2/models/add/versions/1/infer", "/v2/models/add/versions/x/infer",
])
EXTRA_HEADERS = st.fixed_dictionaries({}, optional={
    "Content-Encoding": st.sampled_from(["gzip", "deflate", "br", "identity", "x"]),
    "Inference-Header-Content-Length": st.sampled_from(["0", "5", "-1", "x", "99999999999"]),
    "Content-Type": st.sampled_from(["application/json", "application/octet-stream", "text/x"]),
})


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(path=PATHS, body=BODIES, headers=EXTRA_HEADERS, compress=st.booleans())
def test_no_input_gets_a_5xx(meter, path, body, headers, compress):
    if compress and headers.get("Content-Encoding") == "gzip":
        body = gzip.compress(body)
    connection = http.client.HTTPConnection("127.0.0.1", meter.http_port, timeout=30)
    try:
        connection.request("POST", path, body=body, headers={
            "Authorization": f"Bearer {CREDENTIAL}", **headers,
        })
        response = connection.getresponse()
        payload = response.read()
    finally:
        connection.close()
    if response.status >= 400:
        answer = json.loads(payload)
        assert isinstance(answer["error"], str) and answer["error"], answer
        assert response.status < 500 or (response.status, answer["code"]) == (502, "ModelError"), \
            answer
    assert meter.process.poll() is None
