"""Malformed requests against the running meter: each gets a JSON 4xx, and no log line, metric
or usage report ever holds the credential or the prompt it carried."""

import pytest
from conftest import CREDENTIAL, get_text

from cocoon.devstack.rawhttp import exchange, malformed
from cocoon.meter.journal import read_charges

pytestmark = pytest.mark.triton
CANARY = "zebracanary7731"
SECRET = f"{CANARY}-credential"
PROMPT = f'{{"text_input": "{CANARY} secret prompt", "max_tokens": 1}}'.encode()
GENERATE = "/v2/models/tokens/generate"


ATTACKS = malformed(GENERATE, CREDENTIAL, SECRET, PROMPT, CANARY)


async def test_malformed_requests_get_json_4xx_and_leave_no_trace(meter):
    answers = {}
    for name, data in ATTACKS.items():
        status, answer = await exchange(meter.http_port, data)
        answers[name] = status
        assert 400 <= status < 500, (name, status, answer)
        assert answer["code"] in {"BadRequest", "Unauthenticated"}, (name, answer)
        assert answer["message"], name
    assert answers["header line too long"] == 431
    assert answers["bad gzip"] == answers["malformed JSON"] == 400
    # Nothing reached Triton or the journal, and the meter is still serving.
    assert list(read_charges(meter.journal)) == []
    assert meter.is_ready()
    for text in (
        meter.log_text(),
        await get_text(f"{meter.admin_url}/metrics"),
    ):
        assert CANARY not in text
        assert CREDENTIAL not in text
    log = meter.log_text()
    assert '"level": "debug"' in log
    assert "request refused by the HTTP layer" in log  # the parser's errors were logged
