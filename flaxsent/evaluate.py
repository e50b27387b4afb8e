"""`flaxsent eval`: accuracy, precision, recall, F1, ROC AUC, log loss and the confusion matrix of
a classifier on a labelled file (GLUE SST-2 TSV, CSV, JSONL, parquet), streamed through the model.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from .errors import FlaxsentError
from .metrics import classification_metrics, parse_labels, plot_metrics
from .records import STDIO, read_records


class EvalError(FlaxsentError):
    """A labelled file that cannot be scored: a bad row, a missing or unknown label."""


def _where(path: str, line: int) -> str:
    unit = "row" if path.lower().endswith((".parquet", ".pq")) else "line"
    return f"{'stdin' if path == STDIO else path}, {unit} {line}"


def evaluate_file(clf: Any, path: str, *, text_column: str | None = None,
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
                raise EvalError(f"{_where(path, record.line)}: {record.error}")
            if label_column not in record.extra:
                raise EvalError(f"{_where(path, record.line)}: no {label_column!r} field; "
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
    from .classifier import softmax  # lazily: the CLI parser imports this module, not jax
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


def run(args: argparse.Namespace) -> int:
    """The `eval` subcommand."""
    from .classifier import Classifier
    options: dict[str, Any] = {}
    if args.devices is not None:
        options["devices"] = args.devices
    if args.max_length is not None:
        options["max_length"] = args.max_length
    clf = Classifier.from_pretrained(args.model, dtype=args.dtype, **options)
    metrics, labels, probs = evaluate_file(clf, args.data, text_column=args.text_column,
                                           label_column=args.label_column,
                                           input_fmt=args.input_format)
    if args.plot:
        plot_metrics(metrics, labels, probs, args.plot)
    if args.json:
        print(json.dumps(metrics))
    else:
        print(format_table(metrics))
        if args.plot:
            print(f"\nplot written to {args.plot}")
    sys.stdout.flush()
    return 0


def add_parser(subparsers: Any) -> None:
    """Add the `eval` subcommand to a `parser.add_subparsers()` object."""
    p = subparsers.add_parser(
        "eval", help="score a classifier on a labelled file (SST-2 TSV, CSV, JSONL, parquet)",
        description="Accuracy, precision, recall, F1, ROC AUC, log loss and the confusion "
                    "matrix of a classifier on DATA.")
    p.add_argument("data", help="labelled file: GLUE SST-2 TSV (sentence<TAB>label), CSV, "
                                "JSONL or parquet")
    p.add_argument("--model", "-m", required=True,
                   help="converted flaxsent folder, HF folder or Hub id")
    p.add_argument("--text-column", default=None,
                   help="column holding the text (default: text, else sentence)")
    p.add_argument("--label-column", default="label",
                   help="column holding the gold label: a class id or a label name "
                        "(default: label)")
    p.add_argument("--input-format", default=None, choices=["jsonl", "csv", "tsv", "parquet"],
                   help="format when the extension does not say")
    p.add_argument("--json", action="store_true", help="print one JSON object, not a table")
    p.add_argument("--plot", metavar="FILE", default=None,
                   help="write the ROC curve and confusion matrix to a PNG")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--devices", type=int, default=None,
                   help="use the first N local devices (default: all)")
    p.add_argument("--max-length", type=int, default=None,
                   help="truncate texts to N tokens (default: the model's limit)")
    p.set_defaults(func=run)
