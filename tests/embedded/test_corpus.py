"""The embedded corpus: the SST-2 dev set's token lengths, measured with the project's tokenizer."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys

import pytest

from flaxsent.core.tokenizer import TextTokenizer
from flaxsent.embedded.corpus import (
    CORPUS_STATS_TARGET,
    WORDS,
    generate_corpus,
    token_length_stats,
)
from flaxsent.embedded.vocab import write_tokenizer_files

STATS = ("n", "mean", "median", "p90", "max", "min")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> TextTokenizer:
    """TextTokenizer over the tokenizer files of the default model's folder."""
    folder = tmp_path_factory.mktemp("default-tokenizer")
    write_tokenizer_files(folder)
    return TextTokenizer.from_folder(folder)


def _stats(tokenizer: TextTokenizer, texts: list[str]) -> dict[str, float]:
    ids, lengths = tokenizer.encode_batch(texts, truncation=False)
    assert not any(tokenizer.unk_id in row for row in ids)
    return token_length_stats(lengths.tolist())


def _digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def test_every_word_is_one_wordpiece(tokenizer):
    ids, _ = tokenizer.encode_batch(list(WORDS))
    split = [w for w, row in zip(WORDS, ids, strict=True)
             if len(row) != 3 or tokenizer.unk_id in row]
    assert split == []


def test_a_sentence_is_its_words_and_marks_plus_two(tokenizer):
    texts = generate_corpus(300, seed=3)
    _, lengths = tokenizer.encode_batch(texts, truncation=False)
    assert lengths.tolist() == [len(re.findall(r"\w+|[,;.!]", t)) + 2 for t in texts]


@pytest.mark.parametrize("seed", [0, 11])
def test_872_sentences_have_the_dev_set_statistics_exactly(tokenizer, seed):
    stats = _stats(tokenizer, generate_corpus(872, seed))
    assert {k: stats[k] for k in STATS} == {k: CORPUS_STATS_TARGET[k] for k in STATS}


@pytest.mark.parametrize(("n", "tolerance"), [(64, 1.0), (5000, 0.05)])
def test_other_sizes_keep_the_statistics_close(tokenizer, n, tolerance):
    stats = _stats(tokenizer, generate_corpus(n, seed=7))
    assert stats["n"] == n
    assert abs(stats["mean"] - 23.0) <= tolerance
    assert 20 <= stats["median"] <= 22 and 35 <= stats["p90"] <= 39
    assert 4 <= stats["min"] and stats["max"] <= 66


def test_sentences_read_like_reviews():
    texts = generate_corpus()
    assert all(t[0].isupper() and t[-1] in ".!" and t == t.strip() for t in texts)
    assert not any(re.search(r" [,;.!]|  ", t) for t in texts)
    joined = " ".join(texts)
    for feature in (", but ", "; still ", " an ", " is "):
        assert feature in joined, feature
    assert sum(any(w[0].isupper() for w in t.split()[1:]) for t in texts) > 100  # names
    assert len(set(texts)) > 0.95 * len(texts)


def test_corpus_is_deterministic_per_seed():
    first = generate_corpus(200, seed=5)
    assert generate_corpus(200, seed=5) == first
    assert generate_corpus(200, seed=6) != first
    assert generate_corpus() == generate_corpus(872, 0)


def test_corpus_does_not_depend_on_the_hash_seed():
    """Same text in fresh interpreters with different string-hash seeds."""
    code = ("import hashlib; from flaxsent.embedded.corpus import generate_corpus; "
            "print(hashlib.sha256('\\n'.join(generate_corpus(200, seed=5)).encode()).hexdigest())")
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True)
        assert out.stdout.strip() == _digest(generate_corpus(200, seed=5))


def test_small_and_empty_corpora():
    assert generate_corpus(0) == []
    assert len(generate_corpus(1, seed=3)) == 1


@pytest.mark.parametrize(
    ("n", "seed", "error"),
    [(-1, 0, ValueError), (10, -1, ValueError), (2.5, 0, TypeError), ("10", 0, TypeError),
     (10, None, TypeError), (True, 0, TypeError)],
)
def test_bad_arguments_are_rejected(n, seed, error):
    with pytest.raises(error, match="n must|seed must"):
        generate_corpus(n, seed)


def test_token_length_stats():
    stats = token_length_stats([1, 2, 3, 4, 100])
    assert stats["n"] == 5
    assert stats["mean"] == 22.0
    assert stats["median"] == 3.0
    assert stats["p90"] == pytest.approx(61.6)
    assert (stats["max"], stats["min"]) == (100.0, 1.0)
    with pytest.raises(ValueError, match="at least one"):
        token_length_stats([])
