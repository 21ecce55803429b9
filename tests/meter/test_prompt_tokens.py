"""Prompt counting in the meter: sliced tokenization equals the whole count, and yields."""

import asyncio
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from cocoon.devstack.triton import DEMO_MODELS
from cocoon.meter.prompt_tokens import PromptCounter, slices

PATH = DEMO_MODELS / "llm" / "tokenizer.json"
WHOLE = Tokenizer.from_file(str(PATH))
README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize("text", [
    README,
    README.replace(" ", "   "),
    README.replace(" ", "\n"),
    README.replace(" ", ""),
    "line\nof words\n\n" * 4000,  # newlines only between slices: never cut inside a word
    "word " * 5000 + "x" * 20000 + " tail",
    "ünïcödé ✓ " * 3000,
    "",
])
async def test_sliced_count_equals_the_whole_count(text):
    counted = await PromptCounter(PATH).count(text)
    assert counted == len(WHOLE.encode(text, add_special_tokens=False).ids)


@pytest.mark.parametrize("size", [1, 7, 100])
def test_slices_cover_the_text_exactly(size):
    text = "a  b c   d" * 50
    pieces = slices(text, size)
    assert "".join(pieces) == text
    assert all(p for p in pieces)


async def test_a_long_prompt_lets_other_calls_run_while_it_is_counted():
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    await PromptCounter(PATH).count("the meter charges tokens " * 20000)  # ~500 KB
    task.cancel()
    assert ticks - before >= len(slices("the meter charges tokens " * 20000)) - 1 > 10


async def test_without_a_tokenizer_nothing_is_counted_and_bytes_bound_the_reservation():
    counter = PromptCounter()
    assert await counter.count("hello") is None
    assert counter.bound("héllo") == 6 >= len(WHOLE.encode("héllo").ids)
