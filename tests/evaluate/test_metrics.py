"""flaxsent.evaluate.metrics: every metric against scikit-learn, edge cases, the plot, labels."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from flaxsent.errors import FlaxsentError, MetricsError
from flaxsent.evaluate.metrics import (
    classification_metrics,
    parse_labels,
    plot_metrics,
    roc_auc,
    roc_curve,
)

BINARY = ["NEGATIVE", "POSITIVE"]
THREE = ["negative", "neutral", "positive"]


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _predictions(seed: int, n: int, c: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    """Seeded labels and probabilities, correlated with the labels; with `ties`, the logits are
    rounded so that many scores are exactly equal."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) + 1.2 * np.eye(c)[y]
    if ties:
        logits = np.round(logits * 2) / 2
    return y, _softmax(logits)


CASES = [(seed, n, c, ties) for seed in (0, 1) for c in (2, 3) for ties in (False, True)
         for n in (7, 500)]


@pytest.mark.parametrize("seed,n,c,ties", CASES)
def test_metrics_equal_sklearn(seed, n, c, ties):
    sk = pytest.importorskip("sklearn.metrics")
    y, p = _predictions(seed, n, c, ties)
    names = BINARY if c == 2 else THREE
    m = classification_metrics(y, p, names)
    pred = p.argmax(axis=1)
    average = "binary" if c == 2 else "macro"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zero-division warnings on tiny cases
        assert m["accuracy"] == pytest.approx(sk.accuracy_score(y, pred), abs=1e-12)
        assert m["precision"] == pytest.approx(sk.precision_score(y, pred, average=average),
                                               abs=1e-12)
        assert m["recall"] == pytest.approx(sk.recall_score(y, pred, average=average), abs=1e-12)
        assert m["f1"] == pytest.approx(sk.f1_score(y, pred, average=average), abs=1e-12)
    assert m["loss"] == pytest.approx(sk.log_loss(y, p, labels=list(range(c))), rel=1e-10)
    assert m["confusion_matrix"] == sk.confusion_matrix(y, pred, labels=list(range(c))).tolist()
    if len(np.unique(y)) == c:
        want = (sk.roc_auc_score(y, p[:, 1]) if c == 2
                else sk.roc_auc_score(y, p, multi_class="ovr", average="macro"))
        assert m["auc"] == pytest.approx(want, abs=1e-12)
    assert m["n"] == n
    assert m["average"] == average


def test_roc_curve_matches_sklearn_with_ties():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) + 0.3 * y, 1)  # heavy ties
    fpr, tpr, thr = roc_curve(y, scores)
    sfpr, stpr, sthr = sk.roc_curve(y, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sfpr)
    np.testing.assert_allclose(tpr, stpr)
    np.testing.assert_array_equal(thr[1:], sthr[1:])
    assert np.isinf(thr[0])
    assert roc_auc(y, scores) == pytest.approx(sk.roc_auc_score(y, scores), abs=1e-12)


def test_auc_all_ties_is_one_half():
    assert roc_auc(np.array([0, 1, 0, 1]), np.full(4, 0.5)) == pytest.approx(0.5)


def test_float32_probabilities_log_loss_like_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    y = np.array([0, 1, 1, 0])
    p = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.3, 0.7]], dtype=np.float32)
    m = classification_metrics(y, p, BINARY)
    assert np.isfinite(m["loss"])
    assert m["loss"] == pytest.approx(sk.log_loss(y, p), rel=1e-6)


def test_single_class_gives_auc_none():
    y = np.ones(6, dtype=np.int64)
    _, p = _predictions(0, 6, 2, False)
    m = classification_metrics(y, p, BINARY)
    assert m["auc"] is None
    assert 0.0 <= m["accuracy"] <= 1.0
    y3 = np.full(5, 2)
    _, p3 = _predictions(0, 5, 3, False)
    assert classification_metrics(y3, p3, THREE)["auc"] is None


def test_no_positive_predictions_is_zero_not_nan():
    y = np.array([0, 1, 0, 1])
    p = np.array([[0.9, 0.1]] * 4)
    m = classification_metrics(y, p, BINARY)
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["f1"] == 0.0
    assert m["auc"] == pytest.approx(0.5)
    negative = m["per_class"]["NEGATIVE"]
    assert negative == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 2}


def test_macro_skips_a_class_absent_from_labels_and_predictions_like_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    y = np.array([0, 1, 1, 0, 1])
    p = _softmax(np.array([[2, 0, -5], [0, 2, -5], [2, 0, -5], [2, 1, -5], [0, 2, -5]], float))
    m = classification_metrics(y, p, THREE)
    pred = p.argmax(axis=1)
    assert m["f1"] == pytest.approx(sk.f1_score(y, pred, average="macro"))
    assert m["precision"] == pytest.approx(sk.precision_score(y, pred, average="macro"))
    assert m["auc"] == pytest.approx(np.mean([sk.roc_auc_score(y == k, p[:, k]) for k in (0, 1)]))


def test_metrics_are_json_ready():
    import json
    y, p = _predictions(0, 50, 3, False)
    json.dumps(classification_metrics(y, p.astype(np.float32), THREE))


@pytest.mark.parametrize("labels,probs,match", [
    (np.array([0, 1]), np.ones(2), "must be \\[N, C\\]"),
    (np.array([0, 1, 1]), np.full((2, 2), 0.5), "3 labels for 2"),
    (np.array([0, 2]), np.full((2, 2), 0.5), "out of range"),
    (np.array([0.0, 1.0]), np.full((2, 2), 0.5), "integer class ids"),
    (np.array([], dtype=int), np.zeros((0, 2)), "no examples"),
])
def test_bad_inputs_are_clear_errors(labels, probs, match):
    with pytest.raises(MetricsError, match=match):
        classification_metrics(labels, probs, BINARY)


def test_roc_curve_needs_both_classes():
    with pytest.raises(MetricsError, match="both positive and negative"):
        roc_curve(np.zeros(3), np.array([0.1, 0.2, 0.3]))


@pytest.mark.parametrize("c", [2, 3])
def test_plot_writes_a_png(tmp_path, c):
    pytest.importorskip("matplotlib")
    y, p = _predictions(1, 120, c, False)
    names = BINARY if c == 2 else THREE
    m = classification_metrics(y, p, names)
    out = tmp_path / "eval.png"
    plot_metrics(m, y, p, str(out))
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 5000


def test_plot_with_a_single_class(tmp_path):
    pytest.importorskip("matplotlib")
    y = np.zeros(4, dtype=int)
    p = np.full((4, 2), 0.5)
    out = tmp_path / "one.png"
    plot_metrics(classification_metrics(y, p, BINARY), y, p, str(out))
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_parse_labels_ids_names_and_case():
    got = parse_labels([0, "1", "positive", "NEGATIVE", " Positive ", 1.0, np.int64(0), "0.0"],
                       BINARY)
    assert got.dtype == np.int64
    assert got.tolist() == [0, 1, 1, 0, 1, 1, 0, 0]


def test_parse_labels_prefers_names_for_strings():
    names = ["1", "2", "3"]  # star ratings: the string "1" is the name of class 0
    assert parse_labels(["1", "3", 1], names).tolist() == [0, 2, 1]


@pytest.mark.parametrize("value", ["maybe", 2, -1, 0.5, None, True, "", float("nan")])
def test_parse_labels_unknown_names_value_and_row(value):
    with pytest.raises(FlaxsentError) as info:
        parse_labels(["positive", value], BINARY)
    msg = str(info.value)
    assert repr(value) in msg and "row 2" in msg and "NEGATIVE, POSITIVE" in msg


def test_parse_labels_uses_given_row_numbers():
    with pytest.raises(MetricsError, match="row 17"):
        parse_labels(["negative", "bogus"], BINARY, rows=[16, 17])
