"""Fixtures: one real Triton per session (the demo models), one meter process per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from cocoon.devstack import triton
from cocoon.meter.pricing import Price
from cocoon.meter.process import MeterProcess, start_meter, write_credits

CREDENTIAL = "test-credential-alpha"
CHANNEL = "tenant/alpha"
POOR_CREDENTIAL = "test-credential-poor"
POOR_CHANNEL = "tenant/poor"
PRICE = Price(per_request="1000", per_input_token="10", per_output_token="100")
AUTH = {"Authorization": f"Bearer {CREDENTIAL}"}


async def get_text(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200, url
        return await response.text()


@pytest.fixture(scope="session")
def triton_server() -> Iterator[triton.TritonServer]:
    with triton.start() as server:
        yield server


@pytest.fixture
def meter(triton_server: triton.TritonServer, tmp_path: Path) -> Iterator[MeterProcess]:
    write_credits(tmp_path / "credits.json", {
        CREDENTIAL: (CHANNEL, 10**15),
        POOR_CREDENTIAL: (POOR_CHANNEL, 3000),
    })
    process = start_meter(
        triton_server, tmp_path, price=PRICE, log_level="debug",
        extra_args=("--reserve-output-tokens=16",),
    )
    yield process
    process.stop()
