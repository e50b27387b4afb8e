"""A generated BERT-uncased-style WordPiece vocabulary, so the benchmark runs with no download."""

from __future__ import annotations

import json
import random
import unicodedata
from collections.abc import Container, Iterable
from functools import lru_cache
from pathlib import Path

from . import wordlist

VOCAB_SIZE = 30522  # bert-base-uncased, and so distilbert-base-uncased-finetuned-sst-2-english
SPECIAL_TOKENS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}
MODEL_MAX_LENGTH = 512
_LAST_UNUSED = 993  # bert-base-uncased has [unused0]..[unused993]; the last sits at index 998
_MAX_CHARS_PER_WORD = 100  # longer words become [UNK], as in BERT's WordPiece

# Single characters besides ASCII: a few Latin-1 signs and accented letters (never uppercase,
# as the vocabulary is uncased).
_EXTRA_CHARS = "¡£¥§©«°±²³´·¹º»¿×÷ßàáâãäåæçèéêëìíîïðñòóôõöøùúûüýþÿ"
_FILLER_SEED = 30522
# Syllable parts for the pseudo-words that fill the vocabulary up to VOCAB_SIZE.
_ONSETS = "b c d f g h j k l m n p r s t v w z br ch cl dr fl gr pl pr sh st th tr".split()
_VOWELS = "a e i o u a e i o u ai ea ee ia io ou".split()
_CODAS = "- - - - - - d k l m n r s t x nd ng nt rd rn rt st".split()


def _ascii_chars() -> list[str]:
    """Printable ASCII in code-point order, without uppercase letters."""
    return [chr(c) for c in range(33, 127) if not "A" <= chr(c) <= "Z"]


def _words_of(phrases: Iterable[str]) -> list[str]:
    """Lowercased alphabetic words of a list of phrases, split as BERT splits them."""
    out: list[str] = []
    for phrase in phrases:
        out.extend(w for w in basic_tokenize(phrase) if w.isalpha())
    return out


def _pseudo_word(rng: random.Random) -> str:
    """One pronounceable made-up word of one to three syllables."""
    parts = []
    for _ in range(rng.choice((1, 2, 2, 2, 2, 3))):
        coda = rng.choice(_CODAS)
        parts.append(rng.choice(_ONSETS) + rng.choice(_VOWELS) + ("" if coda == "-" else coda))
    return "".join(parts)


@lru_cache(maxsize=1)
def _vocab() -> tuple[str, ...]:
    """The vocabulary, built once per process."""
    entries: dict[str, None] = {}

    def add(token: str) -> None:
        entries.setdefault(token, None)

    add("[PAD]")
    for i in range(99):
        add(f"[unused{i}]")
    for token in ("[UNK]", "[CLS]", "[SEP]", "[MASK]"):
        add(token)
    for i in range(99, _LAST_UNUSED + 1):
        add(f"[unused{i}]")
    chars = _ascii_chars() + list(_EXTRA_CHARS)
    for ch in chars:
        add(ch)
    for ch in chars:
        if ch.isalnum():
            add("##" + ch)

    rare = {w.lower() for w in wordlist.RARE}
    words = [
        word
        for word in _words_of(
            wordlist.COMMON
            + wordlist.POSITIVE_ADJ
            + wordlist.NEGATIVE_ADJ
            + wordlist.NEUTRAL_ADJ
            + wordlist.NOUNS
            + wordlist.POSITIVE_NOUNS
            + wordlist.NEGATIVE_NOUNS
            + wordlist.ROLES
            + wordlist.PLURAL_NOUNS
            + wordlist.VERBS_3S
            + wordlist.POSITIVE_VP
            + wordlist.NEGATIVE_VP
            + wordlist.ADVERBS
            + wordlist.PHRASE_TAILS
            + wordlist.PREPOSITIONS
            + wordlist.OPENERS
            + wordlist.POSITIVE_CLAUSES
            + wordlist.NEGATIVE_CLAUSES
            + wordlist.CLOSERS
            + wordlist.EXTRA
            + wordlist.FIRST_NAMES
            + wordlist.SURNAMES
            + wordlist.PREFIXES
        )
        if word not in rare
    ]
    for word in words:
        add(word)
    for number in list(range(10, 101)) + list(range(1900, 2031)):
        add(str(number))
    for suffix in wordlist.SUFFIXES:
        add("##" + suffix)
    # Short words also occur inside longer ones ("un" + "##watch" + "##able").
    for word in words:
        if 3 <= len(word) <= 7:
            add("##" + word)
    letters = "abcdefghijklmnopqrstuvwxyz"
    for a in letters:
        for b in letters:
            add(f"##{a}{b}")
    if len(entries) >= VOCAB_SIZE:
        raise AssertionError(f"word lists give {len(entries)} entries, over {VOCAB_SIZE}")

    rng = random.Random(_FILLER_SEED)
    while len(entries) < VOCAB_SIZE:
        word = _pseudo_word(rng)
        if word in rare or not 3 <= len(word) <= 10:
            continue
        add("##" + word if rng.random() < 0.3 else word)
    return tuple(entries)


def build_vocab() -> list[str]:
    """The 30522-entry vocabulary, laid out like bert-base-uncased's; same on every run."""
    return list(_vocab())


@lru_cache(maxsize=1)
def vocab_set() -> frozenset[str]:
    """The vocabulary as a set, for WordPiece look-ups."""
    return frozenset(_vocab())


def write_tokenizer_files(folder: str | Path) -> None:
    """Write `vocab.txt` and `tokenizer_config.json`, as the SST-2 checkpoint ships them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(_vocab()) + "\n", encoding="utf-8")
    config = {"model_max_length": MODEL_MAX_LENGTH, "do_lower_case": True}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def _is_punctuation(ch: str) -> bool:
    """BERT's punctuation test: all non-alphanumeric printable ASCII, and Unicode P* classes."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def basic_tokenize(text: str) -> list[str]:
    """Lowercase, strip accents, split on whitespace and punctuation, as BERT uncased does.

    Covers the text this package generates (no CJK or control characters).
    """
    text = unicodedata.normalize("NFD", text.lower())
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn")
    out: list[str] = []
    for chunk in text.split():
        start = 0
        for i, ch in enumerate(chunk):
            if _is_punctuation(ch):
                if i > start:
                    out.append(chunk[start:i])
                out.append(ch)
                start = i + 1
        if start < len(chunk):
            out.append(chunk[start:])
    return out


def wordpiece(word: str, vocab: Container[str]) -> list[str]:
    """Greedy longest-match-first WordPiece split of one basic token; `[UNK]` if impossible."""
    if len(word) > _MAX_CHARS_PER_WORD:
        return ["[UNK]"]
    pieces: list[str] = []
    start = 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                pieces.append(piece)
                break
            end -= 1
        else:
            return ["[UNK]"]
        start = end
    return pieces


def tokenize(text: str) -> list[str]:
    """WordPiece tokens of `text` under the generated vocabulary, without [CLS] and [SEP]."""
    vocab = vocab_set()
    return [piece for word in basic_tokenize(text) for piece in wordpiece(word, vocab)]
