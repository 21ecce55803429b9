"""Counting prompt tokens in the meter, with the pool's own tokenizer when it has one.

The count is used twice: to reserve credit before forwarding (an upper bound is enough, and for
byte-level tokenizers a prompt never has more tokens than UTF-8 bytes), and to charge the
prompt when the model does not report `prompt_tokens` (only with the real tokenizer: the
meter never charges a guess).

Tokenizing holds the GIL (measured: ~0.1-0.5 s per 512 KiB on this project's machines), so a
long prompt would stall every other call on the meter's loop. Prompts are therefore tokenized in
slices of about SLICE_CHARS, yielding to the loop between slices. Slices end just before a space
that follows a non-space, which is a boundary of the pre-tokenizers of byte-level BPE
(GPT-2 style) and Metaspace tokenizers, so the sum over slices equals the whole count for them;
a slice without such a boundary is cut where it is, which can only split a token in two.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tokenizers import Tokenizer

SLICE_CHARS = 8192


def slices(text: str, size: int = SLICE_CHARS) -> list[str]:
    """`text` cut into pieces of about `size` characters, each ending before a word's space."""
    pieces, start = [], 0
    while len(text) - start > size:
        end = start + size
        cut = text.rfind(" ", start + 1, end)
        while cut > start and text[cut - 1] == " ":
            cut = text.rfind(" ", start + 1, cut)
        if cut <= start:
            cut = _newline_cut(text, start, end)
        if cut <= start:
            break  # no boundary that keeps the tokens whole: count the rest in one piece
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def _newline_cut(text: str, start: int, end: int) -> int:
    """The last newline in (start, end) standing alone between two non-blank characters: a
    pre-tokenizer splits there whatever follows, so the counts of the pieces add up."""
    cut = text.rfind("\n", start + 1, end)
    while cut > start and (
        text[cut - 1].isspace() or cut + 1 >= len(text) or text[cut + 1].isspace()
    ):
        cut = text.rfind("\n", start + 1, cut)
    return cut


class PromptCounter:
    def __init__(self, tokenizer: Path | None = None) -> None:
        self._tokenizer = None if tokenizer is None else Tokenizer.from_file(str(tokenizer))

    @property
    def enabled(self) -> bool:
        return self._tokenizer is not None

    async def count(self, text: str) -> int | None:
        """Tokens by the model's tokenizer, sliced so the loop keeps serving; None without one."""
        if self._tokenizer is None:
            return None
        total = 0
        for i, piece in enumerate(slices(text)):
            if i:
                await asyncio.sleep(0)
            total += len(self._tokenizer.encode(piece, add_special_tokens=False).ids)
        return total

    @staticmethod
    def bound(text: str) -> int:
        """At least the number of tokens `text` takes with a byte-level tokenizer."""
        return len(text.encode())
