"""The README's OpenAI curl commands, run as written against a local meter and real Triton.

Only the `POOL=` line is replaced by the local meter's address; $TOKEN is a real credential.
"""

import json
import os
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import CHANNEL, CREDENTIAL

from cocoon.agent.simulated import SimulatedTee
from cocoon.devstack.triton import DEMO_MODELS
from cocoon.meter.journal import read_charges
from cocoon.meter.process import start_meter, write_credits

pytestmark = pytest.mark.triton

README = Path(__file__).resolve().parents[2] / "README.md"


def _examples() -> str:
    text = README.read_text()
    block = re.search(r"<!-- openai-examples -->\n```sh\n(.*?)```\n<!-- /openai-examples -->",
                      text, re.S)
    assert block, "README lost its OpenAI examples block"
    return block.group(1)


def test_readme_openai_commands_work_as_written(triton_server, tmp_path):
    write_credits(tmp_path / "credits.json", {CREDENTIAL: (CHANNEL, 10**15)})
    SimulatedTee.generate(now=datetime.now(UTC)).save(tmp_path / "sim")
    meter = start_meter(triton_server, tmp_path, models=("llm",), simulated_tee=tmp_path / "sim",
                        extra_args=(f"--tokenizer={DEMO_MODELS / 'llm' / 'tokenizer.json'}",))
    try:
        script = re.sub(r"^POOL=.*$", "", _examples(), count=1, flags=re.M)
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True,
            timeout=60, check=True,
            env={**os.environ, "POOL": meter.http_url, "TOKEN": CREDENTIAL},
        )
    finally:
        meter.stop()
    decoder = json.JSONDecoder()
    models, end = decoder.raw_decode(done.stdout)
    whole, end = decoder.raw_decode(done.stdout, end)
    stream = done.stdout[end:]
    assert models["data"][0]["id"] == "llm"
    assert whole["object"] == "chat.completion"
    assert whole["usage"]["completion_tokens"] == 16
    blocks = [e for e in stream.split("\n\n") if e.strip()]
    # the meter's signed receipt closes the stream, after [DONE], where OpenAI clients stop
    assert blocks[-1].startswith("event: cocoon.receipt\ndata: ")
    events = [e.removeprefix("data: ") for e in blocks[:-1]]
    assert events[-1] == "[DONE]"
    usage = json.loads(events[-2])["usage"]
    assert usage["completion_tokens"] == 16
    charged = [c.units.output_tokens for c in read_charges(meter.journal)]
    assert charged == [16, 16]
