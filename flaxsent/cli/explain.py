"""`flaxsent explain`: which words moved each text's score (integrated gradients over the word
embeddings), written as attributions.jsonl, explain.html and explain.png."""

from __future__ import annotations

import argparse
import sys
from typing import Any

METHODS = ("integrated-gradients", "gradient-x-input")  # flaxsent.core.attribution.METHODS


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "explain", help="which words moved each text's score (integrated gradients)",
        description="Attribute each text's score to its words: integrated gradients over the "
                    "word embeddings from a [PAD] baseline ([CLS] and [SEP] kept), by "
                    "Gauss-Legendre quadrature as captum computes it, many texts packed "
                    "through the compiled engine. Writes attributions.jsonl, explain.html and "
                    "(up to 40 texts) explain.png into --out.")
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to explain")
    p.add_argument("--model", "-m", required=True,
                   help="converted flaxsent folder, HF folder or Hub id")
    p.add_argument("--file", "-f", default=None,
                   help="more texts: txt (a line each), JSONL, CSV/TSV or Parquet")
    p.add_argument("--text-column", default=None,
                   help="--file's column holding the text (default: text, else sentence)")
    p.add_argument("--target", default=None,
                   help="the label explained for every text (default: each text's predicted "
                        "label)")
    p.add_argument("--steps", type=int, default=50,
                   help="integration points (Gauss-Legendre; default 50)")
    p.add_argument("--method", default=METHODS[0], choices=METHODS,
                   help="integrated-gradients (default) or gradient-x-input (one gradient)")
    p.add_argument("--out", "-o", metavar="DIR", required=True,
                   help="write attributions.jsonl, explain.html and explain.png into DIR")
    p.add_argument("--force", action="store_true", help="replace earlier explain files in DIR")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--devices", type=int, default=None,
                   help="use the first N local devices (default: all)")
    p.add_argument("--max-length", type=int, default=None,
                   help="truncate texts to N tokens (default: the model's limit)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from flaxsent.cli.common import classifier_options
    from flaxsent.errors import ExplainError
    from flaxsent.explain.report import check_out, write_outputs
    from flaxsent.explain.run import explain_all, gather_texts
    if args.steps < 1:
        raise ExplainError(f"--steps {args.steps}: must be a positive integer")
    texts = gather_texts(args.texts, args.file, args.text_column)
    check_out(args.out, args.force)  # before the model loads

    from flaxsent.core.classifier import Classifier
    clf = Classifier.from_pretrained(args.model, dtype=args.dtype, **classifier_options(args))
    explained = explain_all(clf, texts, target=args.target, steps=args.steps,
                            method=args.method, progress=not args.no_progress)
    for i, e in enumerate(explained[:10]):
        top = ", ".join(f"{w} {v:+.3f}" for w, v in e.top(3))
        gap = "" if e.gap is None else f", gap {e.gap:+.2%}"
        print(f"{i + 1}. {e.target} ({e.probability:.3f}{gap}): {top}")
    if len(explained) > 10:
        print(f"... and {len(explained) - 10} more")
    written = write_outputs(explained, args.model, args.out, force=args.force)
    print(f"wrote {', '.join(written)}", file=sys.stderr)
    return 0
