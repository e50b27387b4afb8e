"""`flaxsent eval`: score a classifier on a labelled file (a table, or one JSON object)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from flaxsent.cli.common import classifier_arguments, classifier_options


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
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
    classifier_arguments(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from flaxsent.core.classifier import Classifier
    from flaxsent.evaluate.metrics import plot_metrics
    from flaxsent.evaluate.run import evaluate_file, format_table
    clf = Classifier.from_pretrained(args.model, dtype=args.dtype, **classifier_options(args))
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
