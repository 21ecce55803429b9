"""Rebuild the demo LLM's tokenizer: a byte-level BPE trained on the project's own docs.

The result (`models/llm/tokenizer.json`, Hugging Face format) is committed, so nothing is
downloaded or trained at run time; rerun this only to change the vocabulary:
`python -m cocoon.devstack.tokenizer_build`. Byte-level BPE encodes any UTF-8 text, and a
prompt never has more tokens than bytes, which the meter relies on when it has no tokenizer.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from cocoon.devstack.triton import DEMO_MODELS

ROOT = Path(__file__).resolve().parents[3]
VOCAB_SIZE = 2048
SPECIAL_TOKENS = ("<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>")


def train(files: list[Path], vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train([str(f) for f in files], trainer)
    return tokenizer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-o", "--output", type=Path, default=DEMO_MODELS / "llm" / "tokenizer.json")
    args = parser.parse_args(argv)
    files = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
    train(files).save(str(args.output), pretty=False)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
