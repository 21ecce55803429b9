"""The demo's paid calls: `cocoon.devstack.calls.chat_stream` drives the official `openai`
package, streaming, through the caller's attested transport, against a real meter in front of
real Triton serving the demo pool's model. What it reports must be exactly what the journal
charged and the signed receipts say, and refusals must come back as the HTTP status the story
counts."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx2
import pytest
from conftest import CHANNEL, CREDENTIAL, POOR_CHANNEL, POOR_CREDENTIAL, PRICE

from cocoon.agent.simulated import SimulatedTee
from cocoon.attestation.policy import Policy
from cocoon.client import ReceiptStore, VerifiedTransport, Verifier
from cocoon.devstack import triton
from cocoon.devstack.calls import MODEL, chat_stream
from cocoon.meter.journal import read_charges
from cocoon.meter.process import MeterProcess, start_meter, write_credits

pytestmark = pytest.mark.triton


@pytest.fixture
def attested(
    triton_server: triton.TritonServer, tmp_path: Path
) -> Iterator[tuple[MeterProcess, Policy]]:
    sim = SimulatedTee.generate(now=datetime.now(UTC))
    sim.save(tmp_path / "sim")
    write_credits(tmp_path / "credits.json", {
        CREDENTIAL: (CHANNEL, 10**15), POOR_CREDENTIAL: (POOR_CHANNEL, 100),
    })
    meter = start_meter(triton_server, tmp_path, price=PRICE, models=(MODEL,),
                        simulated_tee=tmp_path / "sim")
    yield meter, Policy.from_spec(sim.policy_spec())
    meter.stop()


def test_chat_stream_costs_what_the_journal_and_receipts_say(
    attested: tuple[MeterProcess, Policy], tmp_path: Path
) -> None:
    meter, policy = attested
    store = ReceiptStore(tmp_path / "receipts.db")
    verifier = Verifier(policy)
    with httpx2.Client(transport=VerifiedTransport(verifier, store=store)) as http:
        calls = [chat_stream(http, meter.http_url, CREDENTIAL, f"a private prompt {i}", 16)
                 for i in range(2)]
        bad = chat_stream(http, meter.http_url, "not-a-credential", "x", 1)
        poor = chat_stream(http, meter.http_url, POOR_CREDENTIAL, "x", 16)
    assert [(c.status, c.tokens, c.error) for c in calls] == [(200, 16, "")] * 2
    charges = list(read_charges(meter.journal))
    assert [c.cost_nanoton for c in charges] == [c.cost for c in calls]
    assert all(c.cost_nanoton > 0 and c.channel == CHANNEL for c in charges)
    held = store.list(CHANNEL)
    assert sorted(int(r.receipt.cost_nanoton) for r in held) == sorted(c.cost for c in calls)
    report = store.verify(CHANNEL)
    assert report.ok and report.channel_cost(CHANNEL) == sum(c.cost for c in calls)
    assert (bad.status, poor.status) == (401, 402)
    assert bad.error and poor.error
    store.close()
