"""Counting prompt tokens in the meter, with the pool's own tokenizer when it has one.

The count is used twice: to reserve credit before forwarding (an upper bound is enough, and for
byte-level tokenizers a prompt never has more tokens than UTF-8 bytes), and to charge the
prompt when the model does not report `prompt_tokens` (only with the real tokenizer: the
meter never charges a guess).
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer


class PromptCounter:
    def __init__(self, tokenizer: Path | None = None) -> None:
        self._tokenizer = None if tokenizer is None else Tokenizer.from_file(str(tokenizer))

    def count(self, text: str) -> int | None:
        """Tokens by the model's tokenizer; None when the meter has none."""
        if self._tokenizer is None:
            return None
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def bound(self, text: str) -> int:
        """At least the number of tokens `text` can take (exact with a tokenizer)."""
        counted = self.count(text)
        return len(text.encode()) if counted is None else counted
