"""`flaxsent eval`: accuracy, precision, recall, F1, ROC AUC, log loss and the confusion matrix of
a classifier on a labelled file (GLUE SST-2 TSV, CSV, JSONL, parquet), streamed through the model.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from flaxsent.errors import LabelledFileError
from flaxsent.evaluate.labelled import iter_labelled
from flaxsent.evaluate.metrics import classification_metrics

if TYPE_CHECKING:
    from flaxsent.core.classifier import Classifier


def evaluate_file(clf: Classifier, path: str, *, text_column: str | None = None,
                  label_column: str = "label", input_fmt: str | None = None,
                  ) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """(metrics, gold class ids [N], probabilities [N, C]) of `clf` on a labelled file."""
    names = list(clf.labels)
    gold: list[int] = []

    def texts() -> Iterator[str]:
        for text, label in iter_labelled(path, names, text_column=text_column,
                                         label_column=label_column, fmt=input_fmt):
            gold.append(label)
            yield text

    rows = list(clf.stream_logits(texts()))
    if not rows:
        raise LabelledFileError(f"{path!r} holds no labelled rows")
    from flaxsent.core.classifier import softmax  # lazily: importing this module needs no jax
    probs = softmax(np.stack(rows).astype(np.float64))  # float64: log loss precision
    labels = np.asarray(gold, dtype=np.int64)
    metrics = classification_metrics(labels, probs, names)
    return metrics, labels, probs


def format_table(metrics: dict[str, Any]) -> str:
    """The metrics as a readable text table."""

    def num(value: Any) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    names = [str(n) for n in metrics["label_names"]]
    average = metrics["average"]
    lines = [f"examples   {metrics['n']}",
             f"accuracy   {num(metrics['accuracy'])}",
             f"precision  {num(metrics['precision'])}  ({average})",
             f"recall     {num(metrics['recall'])}  ({average})",
             f"f1         {num(metrics['f1'])}  ({average})",
             f"auc        {num(metrics['auc'])}",
             f"loss       {num(metrics['loss'])}  (log loss)",
             "",
             "confusion matrix (rows: true, columns: predicted)"]
    cm = metrics["confusion_matrix"]
    width = max([len(n) for n in names] + [len(str(v)) for row in cm for v in row] + [4])
    lines.append(" " * (width + 2) + "  ".join(n.rjust(width) for n in names))
    for name, row in zip(names, cm, strict=True):
        lines.append(name.rjust(width) + "  " + "  ".join(str(v).rjust(width) for v in row))
    lines += ["", "per class".ljust(width + 2) + "precision  recall      f1  support"]
    for name in names:
        c = metrics["per_class"][name]
        lines.append(f"{name.rjust(width)}  {c['precision']:9.4f}  {c['recall']:6.4f}  "
                     f"{c['f1']:6.4f}  {c['support']:7d}")
    return "\n".join(lines)
