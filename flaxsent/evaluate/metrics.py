"""The model card's evaluation metrics in numpy, for `flaxsent eval`.

Accuracy, precision / recall / F1 (binary: of the positive class, index 1; multi-class: macro over
the classes present in the labels or the predictions, as scikit-learn averages), ROC AUC
(binary; multi-class: one-vs-rest macro), log loss and the confusion matrix. Every number equals
scikit-learn's (the tests check), without scikit-learn at run time. matplotlib is imported only
to draw the plot.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np

from flaxsent.errors import FlaxsentError, MetricsError


def _ratio(num: float, den: float) -> float:
    """num / den, 0.0 when den is 0 (scikit-learn's zero_division default)."""
    return float(num) / float(den) if den else 0.0


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts [C, C]: rows are true classes, columns predicted ones."""
    flat = labels.astype(np.int64) * num_classes + preds.astype(np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def roc_curve(labels: np.ndarray, scores: np.ndarray,
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) at every distinct score, highest first, from (0, 0) at +inf;
    tied scores move along one diagonal segment, so the trapezoid area counts a tie as 1/2."""
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise MetricsError(f"roc_curve: {y.size} labels but {s.size} scores")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise MetricsError("a ROC curve needs both positive and negative labels; "
                           f"got {n_pos} positive and {n_neg} negative")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]  # last index of each tie run
    tps = np.cumsum(y)[last_of_run]
    fps = (last_of_run + 1) - tps
    fpr = np.r_[0.0, fps / n_neg]
    tpr = np.r_[0.0, tps / n_pos]
    thresholds = np.r_[np.inf, s[last_of_run]]
    return fpr, tpr, thresholds


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Binary ROC AUC (area under `roc_curve`, ties counted 1/2); None with a single class."""
    y = np.asarray(labels).astype(bool)
    if y.all() or not y.any():
        return None
    fpr, tpr, _ = roc_curve(y, scores)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0)


def _check_inputs(labels: np.ndarray, probs: np.ndarray, label_names: Sequence[str],
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Validated labels [N] int64 and probabilities [N, C] float."""
    y = np.asarray(labels)
    p = np.asarray(probs)
    if p.ndim != 2:
        raise MetricsError(f"probabilities must be [N, C], got shape {p.shape}")
    n, c = p.shape
    if y.shape != (n,):
        raise MetricsError(f"{y.size} labels for {n} probability rows")
    if c != len(label_names):
        raise MetricsError(f"{c} probability columns but {len(label_names)} label names")
    if c < 2:
        raise MetricsError(f"need at least 2 classes, got {c}")
    if n == 0:
        raise MetricsError("no examples to score")
    if not np.issubdtype(y.dtype, np.integer):
        raise MetricsError(f"labels must be integer class ids, got {y.dtype}: use parse_labels")
    if y.min() < 0 or y.max() >= c:
        bad = int(y[(y < 0) | (y >= c)][0])
        raise MetricsError(f"label id {bad} is out of range for {c} classes")
    if not np.issubdtype(p.dtype, np.floating):
        p = p.astype(np.float64)
    return y.astype(np.int64), p


def log_loss(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean cross-entropy of the true class, probabilities clipped to [eps, 1 - eps] of their
    dtype as scikit-learn does (so a confident miss is large, never inf)."""
    eps = np.finfo(probs.dtype).eps
    picked = np.clip(probs[np.arange(labels.size), labels], eps, 1 - eps)
    return float(-np.mean(np.log(picked.astype(np.float64))))


def classification_metrics(labels: np.ndarray, probs: np.ndarray,
                           label_names: Sequence[str]) -> dict[str, Any]:
    """The model card's metric set for true class ids [N] and probabilities [N, C], JSON-ready."""
    y, p = _check_inputs(labels, probs, label_names)
    n, c = p.shape
    preds = p.argmax(axis=1)
    cm = confusion_matrix(y, preds, c)
    tp = np.diag(cm)
    support = cm.sum(axis=1)  # true count per class
    predicted = cm.sum(axis=0)
    per_class = {
        name: {"precision": _ratio(tp[k], predicted[k]), "recall": _ratio(tp[k], support[k]),
               "f1": _ratio(2 * tp[k], support[k] + predicted[k]), "support": int(support[k])}
        for k, name in enumerate(label_names)}

    if c == 2:
        average = "binary"
        pos = per_class[label_names[1]]
        precision, recall, f1 = pos["precision"], pos["recall"], pos["f1"]
        auc = roc_auc(y == 1, p[:, 1])
    else:
        average = "macro"
        present = [k for k in range(c) if support[k] or predicted[k]]
        rows = [per_class[label_names[k]] for k in present]
        precision = float(np.mean([r["precision"] for r in rows]))
        recall = float(np.mean([r["recall"] for r in rows]))
        f1 = float(np.mean([r["f1"] for r in rows]))
        seen = [k for k in range(c) if support[k]]
        aucs = [roc_auc(y == k, p[:, k]) for k in seen] if len(seen) >= 2 else []
        auc = float(np.mean(aucs)) if aucs else None

    return {
        "n": int(n),
        "accuracy": float(np.mean(preds == y)),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "auc": auc,
        "loss": log_loss(y, p),
        "average": average,
        "label_names": list(label_names),
        "confusion_matrix": cm.tolist(),
        "per_class": per_class,
    }


def parse_labels(values: Sequence[Any], label_names: Sequence[str],
                 rows: Sequence[int] | None = None) -> np.ndarray:
    """Gold labels as class ids [N]: ids (0, "1", 1.0) or label names, case-insensitive (a string
    that is a label name is read as the name); `rows` (e.g. file lines) name a bad value's row."""
    c = len(label_names)
    by_name = {}
    for k, name in enumerate(label_names):
        by_name.setdefault(str(name).strip().casefold(), k)
    out = np.empty(len(values), dtype=np.int64)
    for i, value in enumerate(values):
        k = _label_id(value, by_name, c)
        if k is None:
            where = f"row {rows[i]}" if rows is not None else f"row {i + 1}"
            names = ", ".join(map(str, label_names))
            raise MetricsError(f"label {value!r} in {where} is not a class: use an id 0..{c - 1} "
                               f"or one of {names} (case-insensitive)")
        out[i] = k
    return out


def _label_id(value: Any, by_name: Mapping[str, int], c: int) -> int | None:
    """The class id of one gold label, or None."""
    if isinstance(value, (bool, np.bool_)) or value is None:
        return None
    if isinstance(value, str):
        key = value.strip().casefold()
        if key in by_name:
            return by_name[key]
        try:
            value = int(key)
        except ValueError:
            try:
                value = float(key)
            except ValueError:
                return None
    if isinstance(value, Integral):
        k = int(value)
    elif isinstance(value, Real) and math.isfinite(value) and float(value).is_integer():
        k = int(value)
    else:
        return None
    return k if 0 <= k < c else None


def plot_metrics(metrics: Mapping[str, Any], labels: np.ndarray, probs: np.ndarray,
                 path: str) -> None:
    """Write a PNG with the ROC curve(s) and the confusion matrix, for `flaxsent eval --plot`."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise FlaxsentError("--plot needs matplotlib: pip install 'flaxsent[bench]' "
                            "(or pip install matplotlib)") from err
    names = list(metrics["label_names"])
    y, p = _check_inputs(labels, probs, names)
    c = p.shape[1]
    fig = Figure(figsize=(11, 4.8), layout="constrained")
    ax_roc, ax_cm = fig.subplots(1, 2)

    classes = [1] if c == 2 else range(c)
    drawn = 0
    for k in classes:
        positive = y == k
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = roc_curve(positive, p[:, k])
        auc = roc_auc(positive, p[:, k])
        ax_roc.plot(fpr, tpr, lw=1.8, label=f"{names[k]} (AUC {auc:.4f})")
        drawn += 1
    ax_roc.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey")
    if drawn:
        ax_roc.legend(loc="lower right", fontsize="small")
    else:
        ax_roc.text(0.5, 0.5, "ROC undefined:\nonly one class in the labels",
                    ha="center", va="center")
    ax_roc.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate",
               ylabel="true positive rate",
               title="ROC" + (" (one vs rest)" if c > 2 else f" (positive: {names[1]})"))

    cm = np.asarray(metrics["confusion_matrix"])
    image = ax_cm.imshow(cm, cmap="Blues")
    fig.colorbar(image, ax=ax_cm, shrink=0.8)
    ax_cm.set(xticks=range(c), yticks=range(c), xticklabels=names, yticklabels=names,
              xlabel="predicted", ylabel="true",
              title=f"confusion matrix (n={metrics['n']}, accuracy {metrics['accuracy']:.4f})")
    threshold = cm.max() / 2 if cm.size else 0
    for i in range(c):
        for j in range(c):
            ax_cm.text(j, i, str(cm[i, j]), ha="center", va="center",
                       color="white" if cm[i, j] > threshold else "black")
    fig.savefig(path, format="png", dpi=120)
