"""The official `openai` package through the caller's attested transport: the meter is verified
on the connection before the prompt leaves, and every answer's signed receipt is checked and
kept. Only the base URL, the key and the `http_client` differ from plain OpenAI use."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx2
import openai
import pytest
from conftest import CHANNEL, CREDENTIAL
from test_openai import MESSAGES, PRICE, TOKENIZER_PATH

from cocoon.agent.simulated import SimulatedTee
from cocoon.attestation.policy import Policy
from cocoon.client import ReceiptStore, VerifiedTransport, Verifier
from cocoon.devstack import triton
from cocoon.meter.journal import read_charges
from cocoon.meter.process import MeterProcess, start_meter, write_credits

pytestmark = pytest.mark.triton


@pytest.fixture
def attested(
    triton_server: triton.TritonServer, tmp_path: Path
) -> Iterator[tuple[MeterProcess, Policy]]:
    sim = SimulatedTee.generate(now=datetime.now(UTC))
    sim.save(tmp_path / "sim")
    write_credits(tmp_path / "credits.json", {CREDENTIAL: (CHANNEL, 10**15)})
    meter = start_meter(
        triton_server,
        tmp_path,
        price=PRICE,
        models=("llm",),
        simulated_tee=tmp_path / "sim",
        extra_args=(f"--tokenizer={TOKENIZER_PATH}",),
    )
    yield meter, Policy.from_spec(sim.policy_spec())
    meter.stop()


def test_openai_sdk_over_the_attested_transport(
    attested: tuple[MeterProcess, Policy], tmp_path: Path
) -> None:
    meter, policy = attested
    store = ReceiptStore(tmp_path / "receipts.db")
    verifier = Verifier(policy)
    http = httpx2.Client(transport=VerifiedTransport(verifier, store=store))
    client = openai.OpenAI(
        base_url=f"{meter.http_url}/v1", api_key=CREDENTIAL, http_client=http, max_retries=0
    )
    try:
        whole = client.chat.completions.create(model="llm", messages=MESSAGES, max_tokens=8)
        stream = client.chat.completions.create(
            model="llm",
            messages=MESSAGES,
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    finally:
        http.close()
    assert whole.usage is not None and whole.usage.completion_tokens == 8
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 8
    assert [p.via for p in verifier.pins()]  # the meter was verified before anything was sent
    held = store.list(CHANNEL)
    assert len(held) == 2  # one signed, verified receipt per answer, the stream's included
    journaled = sum(c.cost_nanoton for c in read_charges(meter.journal))
    assert sum(int(r.receipt.cost_nanoton) for r in held) == journaled
    report = store.verify(CHANNEL)
    assert report.ok, report.problems
    store.close()
