"""The default model's vocabulary: bert-base-uncased's size and layout, generated, no download."""

from __future__ import annotations

import itertools
import json
import string
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from flaxsent.embedded.corpus import WORDS

VOCAB_SIZE = 30522  # bert-base-uncased, and so distilbert-base-uncased-finetuned-sst-2-english
MODEL_MAX_LENGTH = 512


def _entries() -> Iterator[str]:
    """Candidate entries in order, repeats included: specials and [unusedN] where BERT has them,
    characters, the corpus's words, then letter pairs and triples (words and ##pieces) as filler,
    which also spell any lowercase ASCII word without [UNK]."""
    yield "[PAD]"
    yield from (f"[unused{i}]" for i in range(99))
    yield from ("[UNK]", "[CLS]", "[SEP]", "[MASK]")
    yield from (f"[unused{i}]" for i in range(99, 994))
    chars = [chr(c) for c in range(33, 127) if not chr(c).isupper()]
    yield from chars
    yield from ("##" + c for c in chars if c.isalnum())
    yield from WORDS
    for size in (2, 3):
        for prefix in ("", "##"):
            yield from (prefix + "".join(p) for p in itertools.product(string.ascii_lowercase,
                                                                        repeat=size))


@lru_cache(maxsize=1)
def build_vocab() -> tuple[str, ...]:
    """The 30522 entries of vocab.txt, in id order; the same on every run."""
    vocab = tuple(itertools.islice(dict.fromkeys(_entries()), VOCAB_SIZE))
    if len(vocab) != VOCAB_SIZE:
        raise AssertionError(f"the vocabulary has {len(vocab)} entries, not {VOCAB_SIZE}")
    return vocab


def write_tokenizer_files(folder: str | Path) -> None:
    """Write `vocab.txt` and `tokenizer_config.json`, as the SST-2 checkpoint ships them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(build_vocab()) + "\n", encoding="utf-8")
    config = {"model_max_length": MODEL_MAX_LENGTH, "do_lower_case": True}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
