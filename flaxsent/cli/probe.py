"""`flaxsent probe`: how much a score moves when only a name changes (templates filled from value
lists), or between the two sentences of each pair."""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Any

from flaxsent.cli.common import classifier_arguments, classifier_options


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "probe", help="how much a score moves when only a name changes (the card's COUNTRY "
                      "check), or between the two sentences of each pair",
        description="Fill each {PLACEHOLDER} of the templates from a value list (several "
                    "placeholders: every combination), classify every sentence, and summarise "
                    "P(label) per value: min, max, spread, std, labels that differ from the "
                    "majority. {COUNTRY} defaults to the 193 UN member states and 2 observer "
                    "states. With --pairs: ΔP between the two sentences of each pair.")
    p.add_argument("--model", "-m", required=True,
                   help="converted flaxsent folder, HF folder or Hub id")
    p.add_argument("--template", "-t", action="append", default=[],
                   help="a sentence with placeholders, e.g. 'This film was filmed in "
                        "{COUNTRY}.' ({{ }} for literal braces; repeatable)")
    p.add_argument("--templates", metavar="FILE", default=None,
                   help="templates, one a line (blank lines and # comments skipped)")
    p.add_argument("--values", metavar="[NAME=]FILE", action="append", default=[],
                   help="the values of {NAME}, one a line (FILE alone: the only placeholder; "
                        "repeatable; default for {COUNTRY}: the embedded UN list)")
    p.add_argument("--max-sentences", type=int, default=10_000,
                   help="refuse runs whose templates and values make more sentences "
                        "(default 10000)")
    p.add_argument("--pairs", metavar="FILE", default=None,
                   help="paired mode: CSV, TSV, JSONL or Parquet with a sentence pair a row")
    p.add_argument("--pair-columns", metavar="A,B", default="a,b",
                   help="the pair's two columns (default a,b)")
    p.add_argument("--worst", type=int, default=5,
                   help="pairs listed by largest |ΔP| (default 5)")
    p.add_argument("--label", default=None,
                   help="the label whose probability is compared (default: the model's "
                        "positive label, else its first)")
    p.add_argument("--out", "-o", metavar="DIR", default=None,
                   help="write probe.json, probe.csv and probe.png into DIR")
    p.add_argument("--force", action="store_true", help="replace earlier probe files in DIR")
    p.add_argument("--explain", action="store_true",
                   help="explain every sentence for the label (integrated gradients): the "
                        "attribution of the value's own tokens and the top words, added to "
                        "probe.json, probe.csv and probe.png")
    p.add_argument("--steps", type=int, default=50,
                   help="--explain's integration points (Gauss-Legendre; default 50)")
    classifier_arguments(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from flaxsent.errors import ProbeError
    from flaxsent.probe.report import (
        check_out,
        pairs_markdown,
        pairs_record,
        pairs_rows,
        plot_pairs,
        plot_probe,
        probe_markdown,
        probe_record,
        probe_rows,
        write_outputs,
    )
    from flaxsent.probe.run import (
        parse_pair_columns,
        plan_probe,
        read_list,
        read_pairs,
        run_pairs,
        run_probe,
    )
    if args.max_sentences < 1:
        raise ProbeError(f"--max-sentences {args.max_sentences}: must be a positive integer")
    if args.worst < 0:
        raise ProbeError(f"--worst {args.worst}: must be 0 or more")
    if args.steps < 1:
        raise ProbeError(f"--steps {args.steps}: must be a positive integer")
    templates = list(args.template) + (read_list(args.templates, "--templates")
                                       if args.templates else [])
    if args.pairs is not None:  # everything checked before the model loads
        if templates or args.values:
            raise ProbeError("--pairs takes no --template, --templates or --values: it "
                             "compares the sentences of each pair")
        columns = parse_pair_columns(args.pair_columns)
        pairs = read_pairs(args.pairs, columns)
    else:
        plan = plan_probe(templates, args.values, max_sentences=args.max_sentences)
    if args.out:
        check_out(args.out, args.force)

    from flaxsent.core.classifier import Classifier
    from flaxsent.probe.attribution import explain_pairs, explain_probe
    clf = Classifier.from_pretrained(args.model, dtype=args.dtype, **classifier_options(args))
    if args.pairs is not None:
        result = run_pairs(clf, pairs, columns, label=args.label)
        print(pairs_markdown(result, args.model, args.pairs, worst=args.worst))
        explained = explain_pairs(clf, result, args.steps) if args.explain else None
        record = pairs_record(result, args.model, args.pairs, explained)
        rows = pairs_rows(result, explained)
        plot = functools.partial(plot_pairs, result, worst=args.worst)
    else:
        result = run_probe(clf, plan, label=args.label)
        print(probe_markdown(result, args.model))
        explained = explain_probe(clf, result, args.steps) if args.explain else None
        record, rows = probe_record(result, args.model, explained), probe_rows(result, explained)
        plot = functools.partial(plot_probe, result, explained=explained)
    sys.stdout.flush()
    if args.out:
        written = write_outputs(record, rows, plot, args.out, force=args.force)
        print(f"wrote {', '.join(written)}", file=sys.stderr)
    else:
        print("pass --out DIR to write probe.json, probe.csv and probe.png", file=sys.stderr)
    return 0
