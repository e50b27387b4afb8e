"""The embedded benchmark workload: generated vocabulary and SST-2-like corpus."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
from flaxsent.bench import wordlist
from flaxsent.bench.corpus import (
    CORPUS_STATS_TARGET,
    generate_corpus,
    generate_labelled_corpus,
    token_length_stats,
    token_lengths,
)
from flaxsent.bench.vocab import VOCAB_SIZE, build_vocab, tokenize, write_tokenizer_files


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory):
    """The transformers tokenizer loaded from the files `write_tokenizer_files` writes."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("tokenizer")
    write_tokenizer_files(folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "distilbert"}))
    return transformers.AutoTokenizer.from_pretrained(str(folder))


@pytest.fixture(scope="module")
def corpus() -> list[tuple[str, int]]:
    return generate_labelled_corpus()


@pytest.fixture(scope="module")
def hf_ids(hf_tokenizer, corpus) -> list[list[int]]:
    return hf_tokenizer([text for text, _ in corpus])["input_ids"]


def _digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


# -- vocabulary ---------------------------------------------------------------------------------


def test_vocab_has_bert_size_and_unique_entries():
    vocab = build_vocab()
    assert len(vocab) == VOCAB_SIZE == 30522
    assert len(set(vocab)) == len(vocab)
    assert all(token and token == token.strip() and "\n" not in token for token in vocab)


def test_vocab_special_tokens_sit_where_bert_uncased_has_them():
    vocab = build_vocab()
    assert vocab[0] == "[PAD]"
    assert vocab[1:100] == [f"[unused{i}]" for i in range(99)]
    assert vocab[100:104] == ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert vocab[104] == "[unused99]"
    assert vocab[998] == "[unused993]"
    assert vocab[999] == "!"


def test_vocab_is_uncased_wordpiece_with_pieces_and_words():
    vocab = build_vocab()
    entries = set(vocab)
    assert not any(ch.isupper() for token in vocab if not token.startswith("[") for ch in token)
    for ch in "abcdefghijklmnopqrstuvwxyz0123456789":
        assert ch in entries and "##" + ch in entries
    for piece in ("##s", "##ed", "##ing", "##ly", "##er"):
        assert piece in entries
    for word in ("the", "film", "movie", "charming", "dull"):
        assert word in entries
    # Rare corpus words are left out on purpose, so they split.
    assert not {w.lower() for w in wordlist.RARE} & entries


def test_build_vocab_returns_a_fresh_list_each_call():
    first = build_vocab()
    first[0] = "changed"
    assert build_vocab()[0] == "[PAD]"


def test_write_tokenizer_files(tmp_path):
    write_tokenizer_files(tmp_path / "tok")
    lines = (tmp_path / "tok" / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert lines == build_vocab()
    config = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
    assert config == {"model_max_length": 512, "do_lower_case": True}


def test_transformers_tokenizer_loads_and_agrees_on_special_ids(hf_tokenizer):
    assert len(hf_tokenizer) == VOCAB_SIZE
    assert hf_tokenizer.model_max_length == 512
    ids = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}
    assert {tok: hf_tokenizer.convert_tokens_to_ids(tok) for tok in ids} == ids
    encoded = hf_tokenizer("It's a Charming film.")["input_ids"]
    assert encoded[0] == 101 and encoded[-1] == 102
    assert hf_tokenizer.convert_ids_to_tokens(encoded[1:-1]) == tokenize("It's a Charming film.")


# -- corpus -------------------------------------------------------------------------------------


def test_corpus_is_deterministic():
    first = generate_labelled_corpus()
    second = generate_labelled_corpus()
    assert first == second
    texts = [text for text, _ in first]
    assert generate_corpus() == texts
    assert _digest(generate_corpus(872, 0)) == _digest(texts)
    assert generate_corpus(50, seed=1) != generate_corpus(50, seed=2)


def test_corpus_and_vocab_do_not_depend_on_the_hash_seed():
    """Same bytes in fresh interpreters with different string-hash seeds."""
    here = _digest(generate_corpus(200, seed=5) + build_vocab())
    code = (
        "import hashlib; from flaxsent.bench.corpus import generate_corpus; "
        "from flaxsent.bench.vocab import build_vocab; "
        "print(hashlib.sha256('\\n'.join(generate_corpus(200, seed=5) + build_vocab())"
        ".encode()).hexdigest())"
    )
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == here


def test_corpus_default_size_and_shape(corpus):
    assert len(corpus) == CORPUS_STATS_TARGET["n"] == 872
    for text, label in corpus:
        assert isinstance(text, str) and text == text.strip() and text
        assert text[0].isupper()
        assert text[-1] in ".!"
        assert label in (0, 1)


def test_corpus_looks_like_english_reviews(corpus):
    texts = [text for text, _ in corpus]
    joined = " ".join(texts)
    for feature in (", ", "'s ", "n't", "; ", " -- "):
        assert feature in joined, feature
    assert sum(any(ch.isdigit() for ch in t) for t in texts) > 10
    # Capitalised names inside sentences.
    assert sum(any(w[0].isupper() for w in t.split()[1:]) for t in texts) > 50
    assert len(set(texts)) > 0.95 * len(texts)


def test_length_stats_match_sst2_dev_with_transformers_tokenizer(hf_ids):
    stats = token_length_stats([len(ids) for ids in hf_ids])
    ranges = CORPUS_STATS_TARGET["ranges"]
    for key, (low, high) in ranges.items():
        assert low <= stats[key] <= high, (key, stats[key], (low, high))
    assert stats["min"] >= 3


def test_own_length_count_equals_transformers(corpus, hf_ids):
    assert token_lengths([text for text, _ in corpus]) == [len(ids) for ids in hf_ids]


def test_few_unknown_tokens(hf_ids):
    flat = [i for ids in hf_ids for i in ids]
    assert flat.count(100) < 0.01 * len(flat)


def test_some_words_split_into_several_pieces(hf_tokenizer, corpus):
    pieces = [p for text, _ in corpus for p in hf_tokenizer.tokenize(text)]
    continuations = sum(p.startswith("##") for p in pieces)
    assert 0.01 * len(pieces) < continuations < 0.25 * len(pieces)
    assert hf_tokenizer.tokenize("unwatchable")[1:] and len(tokenize("schmaltzy")) >= 3


def test_labels_are_balanced(corpus):
    share = sum(label for _, label in corpus) / len(corpus)
    assert 0.4 <= share <= 0.6


def test_labels_follow_the_last_clause():
    checked = 0
    for text, label in generate_labelled_corpus(2000, seed=3):
        ending = text.lower()
        for clauses, expected in ((wordlist.POSITIVE_CLAUSES, 1), (wordlist.NEGATIVE_CLAUSES, 0)):
            if ending.endswith(tuple(c.lower() + "." for c in clauses)):
                assert label == expected, text
                checked += 1
    assert checked > 20


def test_other_seeds_keep_the_length_statistics():
    stats = token_length_stats(token_lengths(generate_corpus(872, seed=11)))
    for key, (low, high) in CORPUS_STATS_TARGET["ranges"].items():
        assert low <= stats[key] <= high, (key, stats[key])


def test_large_corpus_keeps_the_statistics():
    texts = generate_corpus(100_000, seed=7)
    assert len(texts) == 100_000
    stats = token_length_stats(token_lengths(texts[:5000]))
    assert 22.0 <= stats["mean"] <= 24.0


def test_small_and_empty_corpora():
    assert generate_corpus(0) == []
    assert len(generate_corpus(1, seed=3)) == 1


@pytest.mark.parametrize(
    ("n", "seed", "error"),
    [(-1, 0, ValueError), (2.5, 0, TypeError), ("10", 0, TypeError), (10, None, TypeError)],
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
