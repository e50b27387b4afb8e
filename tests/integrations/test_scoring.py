"""RowScorer, shared by the Beam and Ray handlers: one record per value, in order, each equal to
the Classifier's own result for its text; a value that is not text becomes an error record."""

from __future__ import annotations

import numpy as np
import pytest

from flaxsent.core.classifier import Classifier
from flaxsent.errors import FlaxsentError
from flaxsent.integrations.scoring import RowScorer, as_text
from tests.helpers import WORDS


def texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, rng.integers(1, 30))) for _ in range(n)]


@pytest.fixture(scope="module")
def clf(tiny_flax) -> Classifier:
    return Classifier.from_pretrained(tiny_flax, window=32)


@pytest.mark.parametrize("value, text, error", [
    ("plain", "plain", None),
    (np.str_("numpy text"), "numpy text", None),
    ("caf\u00e9".encode(), "caf\u00e9", None),
    (b"ok \xff\xfe", None,
     "'text' is not valid UTF-8 (byte 4: b'\\xff\\xfe'); re-encode it as UTF-8"),
    (None, None, "'text' is missing (null)"),
    (float("nan"), None, "'text' is missing (null)"),
    (7, None, "'text' is int, not a string"),
    (["a"], None, "'text' is list, not a string"),
])
def test_as_text(value, text, error):
    got = as_text(value, "'text'")
    assert got == (text, error)
    assert got[0] is None or type(got[0]) is str


def test_records_equal_the_classifier_row_by_row_with_bad_values_in_place(clf):
    good = texts(90)
    values: list = list(good)
    bad_at = {0: None, 17: b"\xc3(", 50: 3.5, 89: None}
    for i, value in sorted(bad_at.items()):
        values.insert(i, value)
    records = RowScorer(clf).score(values, "'review'")
    assert len(records) == len(values)
    expected = iter(clf(good))
    for i, record in enumerate(records):
        if i in bad_at:
            assert record["label"] is None and record["score"] is None
            assert record["error"].startswith("'review' is ")
        else:
            want = next(expected)
            assert set(record) == {"label", "score"}
            assert record["label"] == want["label"]
            assert record["score"] == pytest.approx(want["score"], abs=1e-6)
    assert next(expected, None) is None


def test_top_k_and_logits(clf):
    values = texts(20, seed=1) + [None]
    scorer = RowScorer(clf, top_k=None, function_to_apply="sigmoid", logits=True)
    assert scorer.fields == ("labels", "logits")
    records = scorer.score(values)
    want = clf(values[:-1], top_k=None, function_to_apply="sigmoid")
    logits = clf.logits(values[:-1])
    for record, labels, row in zip(records, want, logits, strict=False):
        assert [r["label"] for r in record["labels"]] == [r["label"] for r in labels]
        np.testing.assert_allclose([r["score"] for r in record["labels"]],
                                   [r["score"] for r in labels], atol=1e-6)
        np.testing.assert_allclose(record["logits"], row, atol=1e-6)
    assert records[-1] == {"labels": None, "logits": None,
                           "error": "the element is missing (null)"}


def test_empty_batch(clf):
    assert RowScorer(clf).score([]) == []


@pytest.mark.parametrize("options, pattern", [
    ({"top_k": 0}, "top_k must be a positive integer"),
    ({"function_to_apply": "tanh"}, "function_to_apply='tanh'"),
])
def test_bad_options_are_refused_at_construction(clf, options, pattern):
    with pytest.raises(FlaxsentError, match=pattern):
        RowScorer(clf, **options)


def test_a_batch_without_a_single_text(clf):
    assert RowScorer(clf).score([None, b"\xff"]) == [
        {"label": None, "score": None, "error": "the element is missing (null)"},
        {"label": None, "score": None,
         "error": "the element is not valid UTF-8 (byte 1: b'\\xff'); re-encode it as UTF-8"}]


def test_per_call_options_replace_the_scorers_for_that_call_only(clf):
    values = texts(10, seed=2) + [None]
    scorer = RowScorer(clf)
    records = scorer.score(values, options={"top_k": 2, "logits": True})
    want = clf(values[:-1], top_k=2)
    for record, labels, row in zip(records, want, clf.logits(values[:-1]), strict=False):
        assert [r["label"] for r in record["labels"]] == [r["label"] for r in labels]
        np.testing.assert_allclose(record["logits"], row, atol=1e-6)
    assert set(records[-1]) == {"labels", "logits", "error"}
    assert set(scorer.score(values[:1])[0]) == {"label", "score"}  # the scorer's own again
    assert scorer.with_options({"function_to_apply": "none"}).fields == ("label", "score")


@pytest.mark.parametrize("options, pattern", [
    ({"temperature": 2}, "unknown option.s. temperature: the options are top_k, "
                         "function_to_apply, logits"),
    ({"top_k": -1}, "top_k must be a positive integer"),
    ({"logits": "yes"}, "logits must be True or False"),
])
def test_bad_per_call_options_are_refused(clf, options, pattern):
    with pytest.raises(FlaxsentError, match=pattern):
        RowScorer(clf).score(["fine"], options=options)
