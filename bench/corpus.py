"""The embedded benchmark corpus: review-like English sentences with SST-2 dev-set token lengths.

Each sentence is built to an exact WordPiece length (under the vocabulary of `vocab.py`, [CLS]
and [SEP] counted) drawn from a shifted, rounded, capped gamma law fitted by eye to the SST-2
dev set. Lengths are stratified (one draw per 1/n quantile slice, then shuffled), so the
statistics of any corpus of a few hundred sentences sit close to the target whatever the seed.
All randomness comes from `random.Random(seed).random()`, the same on every machine and run.
"""

from __future__ import annotations

import bisect
import math
import random
import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import TypeVar

import numpy as np

from . import wordlist as W
from .vocab import tokenize

# What the generated lengths aim at: the SST-2 dev set under bert-base-uncased WordPiece,
# [CLS] and [SEP] included; `ranges` are what the tests accept for the default corpus.
CORPUS_STATS_TARGET: dict[str, object] = {
    "source": "SST-2 dev set (GLUE), bert-base-uncased WordPiece, [CLS] and [SEP] counted",
    "n": 872,
    "mean": 23.0,
    "median": 21.0,
    "p90": 38.0,
    "max": 66,
    "min": 4,
    "ranges": {
        "mean": (22.0, 24.0),
        "median": (19.0, 22.0),
        "p90": (34.0, 42.0),
        "max": (60, 70),
        "min": (3, 8),
    },
}

MIN_LENGTH = 4  # shortest sentence: [CLS] word . [SEP]
MAX_LENGTH = 66
# round(length - MIN_LENGTH) ~ Gamma(shape 3, scale): mean 23, median 21, p90 38 once shifted.
_GAMMA_SCALE = 6.4

_CONTRAST = ((",", "but"), (",", "yet"), ("--", "but"), (";", "still,"))
_ADDITIVE = ((",", "and"), (";",), ("--",), ("and",), (",", "and", "besides,"))
_DETERMINERS = ("the", "the", "the", "this", "its", "that", "one")
_COPULAS = ("is", "is", "is", "feels", "seems", "remains", "proves", "is at times")
_MINUTES = tuple(range(78, 181))
_DECADES = tuple(range(1920, 2030, 10))
_SPACE_BEFORE_PUNCT = re.compile(r" (?=[,;.!?])")
T = TypeVar("T")


def _gamma3_cdf(x: float) -> float:
    """CDF of Gamma(shape 3, _GAMMA_SCALE) at x (closed form for an integer shape)."""
    z = x / _GAMMA_SCALE
    return 1.0 - math.exp(-z) * (1.0 + z + z * z / 2.0)


@lru_cache(maxsize=1)
def _length_cdf() -> tuple[float, ...]:
    """P(length <= L) for L = MIN_LENGTH..MAX_LENGTH, the law truncated at MAX_LENGTH."""
    cdf = [_gamma3_cdf(k + 0.5) for k in range(MAX_LENGTH - MIN_LENGTH + 1)]
    return (*(c / cdf[-1] for c in cdf[:-1]), 1.0)


def _target_lengths(n: int, rng: random.Random) -> list[int]:
    """n token lengths, one from each 1/n quantile slice of the length law, shuffled.

    Uses only `rng.random()`, whose stream Python keeps the same across versions and platforms.
    """
    cdf = _length_cdf()
    lengths = [MIN_LENGTH + bisect.bisect_right(cdf, (i + rng.random()) / n) for i in range(n)]
    for i in range(n - 1, 0, -1):  # Fisher-Yates
        j = int(rng.random() * (i + 1))
        lengths[i], lengths[j] = lengths[j], lengths[i]
    return lengths


def _article(word: str) -> str:
    """'a' or 'an' before `word` (by its first letter, which is good enough here)."""
    return "an" if word[0] in "aeiou" else "a"


class _Tables:
    """Word lists split by token count, and a memo of chunk token counts."""

    def __init__(self) -> None:
        self._count: dict[str, int] = {}
        self.pos_adj = W.POSITIVE_ADJ
        self.neg_adj = W.NEGATIVE_ADJ
        self.pos_adj1 = tuple(a for a in W.POSITIVE_ADJ if self.ntok(a) == 1)
        self.neg_adj1 = tuple(a for a in W.NEGATIVE_ADJ if self.ntok(a) == 1)
        self.adv1 = tuple(a for a in W.ADVERBS if self.ntok(a) == 1)
        self.names = W.SURNAMES
        self.pos_verbs = W.VERBS_3S[: W.VERBS_3S.index("lacks")]
        self.neg_verbs = W.VERBS_3S[W.VERBS_3S.index("lacks") :]
        self.closers: dict[int, tuple[str, ...]] = {}
        for closer in W.CLOSERS:
            k = self.ntok(closer)
            self.closers[k] = (*self.closers.get(k, ()), closer)
        # "." ends most sentences, as in any review corpus.
        self.closers[1] = (".",) * 12 + self.closers[1]
        self.max_closer = 1
        while self.max_closer + 1 in self.closers:
            self.max_closer += 1

    def ntok(self, chunk: str) -> int:
        """WordPiece tokens in one chunk of text."""
        n = self._count.get(chunk)
        if n is None:
            n = self._count[chunk] = len(tokenize(chunk))
        return n

    def length(self, chunks: Sequence[str]) -> int:
        """WordPiece tokens in a list of chunks."""
        try:
            return sum(map(self._count.__getitem__, chunks))
        except KeyError:
            return sum(map(self.ntok, chunks))


@lru_cache(maxsize=1)
def _tables() -> _Tables:
    return _Tables()


class _Choices:
    """`random.Random` with a faster `choice` (one float per pick; same stream on every run)."""

    def __init__(self, rng: random.Random) -> None:
        self.random = rng.random

    def choice(self, seq: Sequence[T]) -> T:
        return seq[int(self.random() * len(seq))]


class _Writer:
    """Builds one sentence at a time, to an exact token length, from a seeded random stream."""

    def __init__(self, rng: random.Random) -> None:
        self.t = _tables()
        self.r = _Choices(rng)

    # -- phrases ----------------------------------------------------------------------------
    def adj(self, pos: bool) -> str:
        return self.r.choice(self.t.pos_adj if pos else self.t.neg_adj)

    def adj_phrase(self, pos: bool) -> list[str]:
        u = self.r.random()
        if u < 0.35:
            return [self.r.choice(W.ADVERBS), self.adj(pos)]
        if u < 0.5:
            return [self.adj(pos), "and", self.adj(pos)]
        return [self.adj(pos)]

    def name(self) -> str:
        if self.r.random() < 0.3:
            return f"{self.r.choice(W.FIRST_NAMES)} {self.r.choice(self.t.names)}"
        return self.r.choice(self.t.names)

    def noun_phrase(self, pos: bool | None, det: str | None = None) -> list[str]:
        words = [det or self.r.choice(_DETERMINERS)]
        u = self.r.random()
        if pos is not None and u < 0.5:
            words.append(self.adj(pos))
        elif u < 0.7:
            words.append(self.r.choice(W.NEUTRAL_ADJ))
        words.append(self.r.choice(W.NOUNS))
        if words[0] == "a":
            words[0] = _article(words[1])
        return words

    def subject(self) -> list[str]:
        u = self.r.random()
        if u < 0.15:
            return [f"{self.name()}'s", self.r.choice(W.NOUNS)]
        if u < 0.3:
            return ["it"]
        return self.noun_phrase(None)

    def tail(self) -> list[str]:
        u = self.r.random()
        if u < 0.15:
            return ["for", str(self.r.choice(_MINUTES)), "minutes"]
        if u < 0.25:
            return ["in", "the", f"{self.r.choice(_DECADES)}s"]
        if u < 0.35:
            return ["with", self.name()]
        if u < 0.6:
            return [self.r.choice(W.PREPOSITIONS), *self.noun_phrase(None)]
        return [self.r.choice(W.PHRASE_TAILS)]

    # -- clauses ----------------------------------------------------------------------------
    def clause(self, pos: bool) -> list[str]:
        """One clause whose verdict is `pos` (praise) or not (scorn)."""
        r = self.r
        u = r.random()
        if u < 0.25:
            words = [*self.subject(), r.choice(_COPULAS), *self.adj_phrase(pos)]
        elif u < 0.35:
            words = ["the", r.choice(W.PLURAL_NOUNS), "are", *self.adj_phrase(pos)]
        elif u < 0.5:
            words = ["it's", *self.noun_phrase(pos, det="a")]
            if r.random() < 0.4:
                words.insert(2, r.choice(W.ADVERBS))
                words[1] = _article(words[2])
        elif u < 0.65:
            if pos or r.random() < 0.5:
                verb = r.choice(self.t.pos_verbs)
            else:
                verb, pos = r.choice(self.t.neg_verbs), True  # "wastes a [good] cast"
            words = [*self.subject(), verb, *self.noun_phrase(pos)]
        elif u < 0.78:
            words = [*self.subject(), r.choice(W.POSITIVE_VP if pos else W.NEGATIVE_VP)]
        elif u < 0.88:
            words = [r.choice(W.POSITIVE_CLAUSES if pos else W.NEGATIVE_CLAUSES)]
        else:
            words = [self.name(), "is", *self.adj_phrase(pos), "as", "the", r.choice(W.ROLES)]
        if r.random() < 0.3:
            words.extend(self.tail())
        return words

    def fragment(self, pos: bool) -> list[str]:
        """A verbless scrap ("a mess", "deeply moving"), for sentences of a few tokens."""
        r = self.r
        u = r.random()
        if u < 0.3:
            return [r.choice(self.t.adv1), r.choice(self.t.pos_adj1 if pos else self.t.neg_adj1)]
        if u < 0.5:
            return ["a", r.choice(W.POSITIVE_NOUNS if pos else W.NEGATIVE_NOUNS)]
        if u < 0.75:
            adj = self.adj(pos)
            return [_article(adj), adj, r.choice(W.NOUNS)]
        return self.adj_phrase(pos)

    def fit(
        self, make: Callable[[bool], list[str]], pos: bool, room: int, tries: int
    ) -> tuple[list[str], int]:
        """The longest of `tries` candidates fitting in `room` tokens, else a 1-token adjective."""
        best: list[str] = []
        best_len = 0
        for _ in range(tries):
            words = make(pos)
            n = self.t.length(words)
            if best_len < n <= room:
                best, best_len = words, n
                if n == room:
                    break
        if not best:
            best = [self.r.choice(self.t.pos_adj1 if pos else self.t.neg_adj1)]
            best_len = 1
        return best, best_len

    def sentence(self, length: int) -> tuple[str, int]:
        """A sentence of exactly `length` WordPiece tokens, [CLS] and [SEP] included, and its
        label (1: the last clause praises)."""
        r, t = self.r, self.t
        budget = length - 2
        pos = r.random() < 0.5
        words: list[str] = []
        if budget >= 14 and r.random() < 0.2:
            words += [r.choice(W.OPENERS), ","]
        used = t.length(words)
        first = True
        while True:
            left = budget - used
            if not first:
                if left <= t.max_closer:
                    break
                conn = r.choice(_CONTRAST) if r.random() < 0.35 else r.choice(_ADDITIVE)
                if conn in _CONTRAST:
                    pos = not pos
                words.extend(conn)
                left -= t.length(conn)
            room = left - 1  # the closer takes at least one token
            if room <= 4:
                clause, n = self.fit(self.fragment, pos, room, 6)
            else:
                clause, n = self.fit(self.clause, pos, room, 1 if room > 20 else 6)
            words.extend(clause)
            used = budget - left + n
            first = False
            if budget - used <= 1:
                break
        left = budget - used
        if left >= 3:  # rather a phrase than a stock closer: "... for 96 minutes."
            for _ in range(6):
                tail = self.tail()
                if t.length(tail) == left - 1:
                    words.extend(tail)
                    left = 1
                    break
        words.append(r.choice(t.closers[left]))
        text = _SPACE_BEFORE_PUNCT.sub("", " ".join(words))
        return text[0].upper() + text[1:], int(pos)


def _check_args(n: int, seed: int) -> None:
    for name, value in (("n", n), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")


def generate_labelled_corpus(n: int = 872, seed: int = 0) -> list[tuple[str, int]]:
    """`n` (sentence, label) pairs, label 1 positive; identical for the same (n, seed)."""
    _check_args(n, seed)
    rng = random.Random(int(seed))
    lengths = _target_lengths(n, rng)
    writer = _Writer(rng)
    return [writer.sentence(length) for length in lengths]


def generate_corpus(n: int = 872, seed: int = 0) -> list[str]:
    """`n` review-like sentences whose WordPiece lengths follow the SST-2 dev set."""
    return [text for text, _ in generate_labelled_corpus(n, seed)]


def token_lengths(texts: Sequence[str]) -> list[int]:
    """WordPiece lengths under the embedded vocabulary, [CLS] and [SEP] included."""
    return [len(tokenize(text)) + 2 for text in texts]


def token_length_stats(lengths: Sequence[int]) -> dict[str, float]:
    """mean, median, p90, max and min of a list of token lengths."""
    if len(lengths) == 0:
        raise ValueError("token_length_stats needs at least one length, got none")
    a = np.asarray(lengths, dtype=np.float64)
    return {
        "n": len(a),
        "mean": float(a.mean()),
        "median": float(np.median(a)),
        "p90": float(np.percentile(a, 90)),
        "max": float(a.max()),
        "min": float(a.min()),
    }
