"""The embedded benchmark corpus: review-like sentences with the SST-2 dev set's token lengths.

With random weights only the lengths matter. Every word and punctuation mark written here is one
WordPiece of the embedded vocabulary (`vocab.py`), so a sentence of k pieces is k + 2 tokens with
[CLS] and [SEP]. Lengths come from a fixed table of 872 (the dev set's size): 872 sentences have
exactly its statistics whatever the seed; another n takes one length from each 1/n slice of it.
All randomness is `random.Random(seed).random()`, whose stream Python keeps across versions.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

CORPUS_STATS_TARGET: dict[str, object] = {
    "source": "SST-2 dev set (GLUE), bert-base-uncased WordPiece, [CLS] and [SEP] counted",
    "n": 872, "mean": 23.0, "median": 21.0, "p90": 38.0, "max": 66, "min": 4,
}
MIN_LENGTH = 4
# How many of the 872 sentences have 4, 5, ..., 66 tokens: a smoothed fit to the dev set.
_COUNTS = (1, 1, 5, 9, 14, 19, 24, 27, 31, 33, 35, 36, 37, 37, 36, 36, 36, 35, 33, 31, 29, 28,
           26, 23, 24, 20, 19, 18, 16, 16, 13, 13, 11, 10, 9, 9, 8, 7, 6, 6, 5, 5, 4, 4, 3, 3,
           3, 2, 2, 2, 2, 1, 2, 1, 1, 1, 1, 0, 1, 1, 0, 0, 1)
_LENGTHS = tuple(length for length, k in enumerate(_COUNTS, MIN_LENGTH) for _ in range(k))

# Slot fillers: D determiner, A adjective, R adverb, N noun, V verb, C copula, P preposition,
# M name. Templates of every length 1..8 let a clause fill any remaining room exactly.
_SLOTS = {
    "D": "the the the this its that a".split(),
    "A": ("good great fine superb moving funny clever charming brilliant lovely smart warm "
          "fresh bold witty gorgeous earnest tender sharp bad dull flat awful boring tired silly "
          "weak messy bland lazy stale clumsy hollow shallow tedious pointless").split(),
    "R": "very truly quite rather too so oddly deeply often never always simply hardly".split(),
    "N": ("film movie story plot script cast director performance ending comedy drama thriller "
          "picture score soundtrack dialogue pace premise sequel debut camera character hero "
          "villain actor romance mystery documentary screenplay humor").split(),
    "V": ("wastes offers delivers lacks finds earns misses deserves needs loses keeps carries "
          "ruins saves rewards").split(),
    "C": "is is is feels seems remains looks becomes".split(),
    "P": "in with about for without despite after beyond".split(),
    "M": ("Smith Jones Brown Taylor Parker Miller Davis Wilson Moore Clark Lewis Walker Hall "
          "Allen Young King Wright Scott Green Baker Adams Nelson Hill Turner Evans").split(),
}
_TEMPLATES = {size: [t for t in ("A", "RA", "DN", "DAN", "MCA", "DNCA", "MVDN", "DNVM", "DNCRA",
                                  "DANCA", "MVDAN", "DNVDAN", "DANCRA", "MCAPDN", "DANVDAN",
                                  "DNCRAPM", "DNCAPDN", "DANVDRAN", "DNCRAPDN", "MCRAPDAN")
                     if len(t) == size] for size in range(1, 9)}
_JOINS = ((",", "and"), (",", "but"), (",", "yet"), (";", "still"), (",", "while"))
_ENDS = (".", ".", ".", ".", "!")
WORDS: tuple[str, ...] = tuple(dict.fromkeys(
    w.lower() for w in (*(w for ws in _SLOTS.values() for w in ws), "an",
                        *(w for join in _JOINS for w in join), *_ENDS)))


def _check_args(n: int, seed: int) -> None:
    for name, value in (("n", n), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


def _clause(size: int, pick: Callable[[Sequence[Any]], Any]) -> list[str]:
    """One clause of exactly `size` words (1..8) from a random template."""
    words = [pick(_SLOTS[slot]) for slot in pick(_TEMPLATES[size])]
    for i, word in enumerate(words[:-1]):
        if word == "a" and words[i + 1][0] in "aeiou":
            words[i] = "an"
    return words


def _sentence(length: int, pick: Callable[[Sequence[Any]], Any]) -> str:
    """A sentence of `length` tokens with [CLS] and [SEP]: clauses joined, then a final mark."""
    room = length - 3  # [CLS], [SEP] and the final mark
    pieces: list[str] = []
    while room > 8:  # a clause, a two-piece join, and at least one piece after it
        size = pick(range(4, min(8, room - 3) + 1))
        pieces += [*_clause(size, pick), *pick(_JOINS)]
        room -= size + 2
    pieces += [*_clause(room, pick), pick(_ENDS)]
    text = " ".join(pieces)
    for mark in ",;.!":
        text = text.replace(" " + mark, mark)
    return text[0].upper() + text[1:]


def generate_corpus(n: int = 872, seed: int = 0) -> list[str]:
    """`n` review-like sentences whose WordPiece lengths follow the SST-2 dev set."""
    _check_args(n, seed)
    r = random.Random(int(seed)).random

    def pick(seq: Sequence[Any]) -> Any:
        return seq[int(r() * len(seq))]

    total = len(_LENGTHS)
    lengths = [_LENGTHS[(i * total + int(r() * total)) // n] for i in range(n)]
    lengths = [length for _, length in sorted((r(), length) for length in lengths)]
    return [_sentence(length, pick) for length in lengths]


def token_length_stats(lengths: Sequence[int]) -> dict[str, float]:
    """n, mean, median, p90, max and min of a list of token lengths."""
    if len(lengths) == 0:
        raise ValueError("token_length_stats needs at least one length, got none")
    a = np.asarray(lengths, dtype=np.float64)
    return {"n": len(a), "mean": float(a.mean()), "median": float(np.median(a)),
            "p90": float(np.percentile(a, 90)), "max": float(a.max()), "min": float(a.min())}
