"""`flaxsent eval`: accuracy, precision, recall, F1, ROC AUC, log loss and the confusion matrix of
a classifier on a labelled file (GLUE SST-2 TSV, CSV, JSONL, parquet), streamed through the model.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import FlaxsentError
from .metrics import classification_metrics, parse_labels
from .readers import read_records

if TYPE_CHECKING:
    from .classifier import Classifier


class EvalError(FlaxsentError):
    """A labelled file that cannot be scored: a bad row, a missing or unknown label."""


def evaluate_file(clf: Classifier, path: str, *, text_column: str | None = None,
                  label_column: str = "label", input_fmt: str | None = None,
                  ) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """(metrics, gold class ids [N], probabilities [N, C]) of `clf` on a labelled file."""
    names = list(clf.labels)
    reader = read_records(path, text_column, input_fmt)
    if reader.fmt == "txt":
        reader.close()
        raise EvalError(f"{path!r} is plain text, which has no labels: give a TSV (GLUE SST-2: "
                        "sentence<TAB>label), CSV, JSONL or parquet file with a label column")
    if reader.columns is not None and label_column not in reader.columns:
        reader.close()
        raise EvalError(f"{path!r} has no label column {label_column!r}; its columns are "
                        f"{', '.join(map(repr, reader.columns))}: choose one with "
                        "--label-column")
    gold: list[int] = []

    def texts() -> Iterator[str]:
        for record in reader:
            if record.error is not None:
                raise EvalError(f"{reader.where(record.line)}: {record.error}")
            if label_column not in record.extra:
                raise EvalError(f"{reader.where(record.line)}: no {label_column!r} field; "
                                "choose the label column with --label-column")
            value = record.extra[label_column]
            gold.append(int(parse_labels([value], names, rows=[record.line])[0]))
            yield record.text

    try:
        rows = list(clf.stream_logits(texts()))
    finally:
        reader.close()
    if not rows:
        raise EvalError(f"{path!r} holds no labelled rows")
    from .classifier import softmax  # lazily: importing this module needs no jax
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
