"""The `flaxsent` command: every subcommand's arguments (convert, export, predict, eval; bench
registers its own), one line per user error, exit 2."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .errors import FlaxsentError

Command = Callable[[argparse.Namespace], int]


def _convert(args: argparse.Namespace) -> int:
    from flaxsent.convert.torch_to_flax import convert_checkpoint
    report = convert_checkpoint(args.src, args.dst, dtype=args.dtype, num_labels=args.num_labels,
                                force=args.force, seed=args.seed)
    print(report.summary(args.dst))
    return 0


def _export(args: argparse.Namespace) -> int:
    from flaxsent.convert.flax_to_torch import export_checkpoint
    written = export_checkpoint(args.src, args.dst, force=args.force)
    print(f"exported {args.src} -> {args.dst} ({', '.join(written)})")
    return 0


def _classifier_options(args: argparse.Namespace) -> dict[str, Any]:
    """The Classifier options `--devices` and `--max-length` set (predict, eval)."""
    options: dict[str, Any] = {}
    if args.devices is not None:
        options["devices"] = args.devices
    if args.max_length is not None:
        options["max_length"] = args.max_length
    return options


def _predict(args: argparse.Namespace) -> int:
    from .predict import PredictError, predict_file, unmap_freed_blocks
    from .readers import STDIO
    from .shards import Shard, finish_part, merge_parts, process_shard
    from .writers import output_format
    if args.merge:
        n = merge_parts(args.merge, args.output, force=args.force)
        print(f"merged {n} record(s) into {args.output or 'stdout'}", file=sys.stderr)
        return 0
    if args.input is None or args.model is None:
        raise PredictError("predict needs --model M and an INPUT file (or --merge MANIFEST)")
    index, count = process_shard(args.distributed, args.coordinator, args.num_processes,
                                 args.process_id)
    if count > 1:
        if args.output in (None, STDIO):
            raise PredictError("a sharded run needs -o OUTPUT: each process writes "
                               "OUTPUT.part-P-of-N")
        output_format(args.output)  # fail now on an unusable extension

    unmap_freed_blocks()  # from the start: loading and compiling free big blocks too
    from .classifier import Classifier
    clf = Classifier.from_pretrained(args.model, dtype=args.dtype, **_classifier_options(args))
    shard = Shard(index, count, block=clf.window)
    output = shard.part_path(args.output) if count > 1 else args.output
    top_k = args.top_k
    if top_k is not None and top_k > len(clf.labels):
        top_k = None if len(clf.labels) > 1 else 1
    result = predict_file(clf, args.input, output, text_column=args.text_column,
                          input_fmt=args.input_format, top_k=top_k, logits=args.logits,
                          resume=args.resume, force=args.force, on_error=args.on_error,
                          chunk_size=args.chunk_size, progress=not args.no_progress, shard=shard)
    if count > 1:
        finish_part(shard, args.output, args.input, wait=args.distributed)
    note = f" ({result.skipped_errors} bad row(s) as error records)" if result.skipped_errors \
        else ""
    resumed = f", after {result.resumed_from} kept" if result.resumed_from else ""
    print(f"predicted {result.written} record(s){resumed} -> {output or 'stdout'}{note}",
          file=sys.stderr)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .classifier import Classifier
    from .evaluate import evaluate_file, format_table
    from .metrics import plot_metrics
    clf = Classifier.from_pretrained(args.model, dtype=args.dtype, **_classifier_options(args))
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


def _top_k(value: str) -> int | None:
    """--top-k: a positive integer, or 'all' (None)."""
    if value.lower() == "all":
        return None
    try:
        k = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: a positive integer or 'all'") from None
    if k < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: a positive integer or 'all'")
    return k


def _classifier_arguments(p: argparse.ArgumentParser) -> None:
    """--dtype, --devices and --max-length (predict, eval)."""
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--devices", type=int, default=None,
                   help="use the first N local devices (default: all)")
    p.add_argument("--max-length", type=int, default=None,
                   help="truncate texts to N tokens (default: the model's limit)")


def _add_predict(sub: Any) -> None:
    p = sub.add_parser(
        "predict", help="classify every row of a file (txt, jsonl, csv, tsv, parquet, -)",
        description="Classify every row of INPUT; write one record per row, in order.")
    p.add_argument("input", nargs="?", help="txt/jsonl/csv/tsv/parquet file, or - for stdin")
    p.add_argument("--model", "-m", help="converted flaxsent folder, HF folder or Hub id")
    p.add_argument("-o", "--output", default=None,
                   help="output file: .jsonl (default, stdout when absent), .csv or .parquet")
    p.add_argument("--text-column", default=None,
                   help="input column holding the text (default: text, else sentence)")
    p.add_argument("--input-format", default=None,
                   choices=["txt", "jsonl", "csv", "tsv", "parquet"],
                   help="input format when the extension does not say (stdin: txt)")
    p.add_argument("--top-k", type=_top_k, default=1,
                   help="labels per row: 1 (label, score) or K / 'all' (a labels list)")
    p.add_argument("--logits", action="store_true", help="add the raw logits to each record")
    p.add_argument("--on-error", choices=["fail", "skip"], default="fail",
                   help="a bad row stops the run (fail, default) or gets an error record (skip)")
    p.add_argument("--resume", action="store_true",
                   help="continue a killed run: keep OUTPUT's complete records up to the last "
                        "whole classifier window, append the rest")
    p.add_argument("--force", action="store_true", help="overwrite an existing OUTPUT")
    _classifier_arguments(p)
    p.add_argument("--chunk-size", type=int, default=1024,
                   help="records per durable output write (default 1024)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    g = p.add_argument_group("multi-process runs")
    g.add_argument("--distributed", action="store_true",
                   help="start jax.distributed; process P of N predicts whole windows of rows, "
                        "dealt out in turn (windows P, P + N, ...)")
    g.add_argument("--coordinator", default=None,
                   help="HOST:PORT of process 0 (or JAX_COORDINATOR_ADDRESS)")
    g.add_argument("--num-processes", type=int, default=None,
                   help="N processes (or JAX_NUM_PROCESSES)")
    g.add_argument("--process-id", type=int, default=None,
                   help="this process, 0..N-1 (or JAX_PROCESS_ID)")
    g.add_argument("--merge", metavar="MANIFEST", default=None,
                   help="join the parts of a finished sharded run into -o OUTPUT")
    p.set_defaults(func=_predict)


def _add_eval(sub: Any) -> None:
    p = sub.add_parser(
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
    _classifier_arguments(p)
    p.set_defaults(func=_eval)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="flaxsent", description="JAX/Flax inference engine for DistilBERT text classifiers")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("convert", help="PyTorch (HF) checkpoint -> Flax checkpoint folder")
    p.add_argument("src", help="local HF folder or Hugging Face Hub id")
    p.add_argument("dst", help="output folder (must not exist unless --force)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="parameter dtype to store (default float32)")
    p.add_argument("--num-labels", type=int, default=None,
                   help="add a freshly initialised N-label head to a checkpoint without one")
    p.add_argument("--seed", type=int, default=0, help="seed of a fresh head (default 0)")
    p.add_argument("--force", action="store_true", help="replace an existing DST")
    p.set_defaults(func=_convert)

    p = sub.add_parser("export", help="Flax checkpoint folder -> HF PyTorch folder")
    p.add_argument("src", help="a folder written by `flaxsent convert`")
    p.add_argument("dst", help="output HF folder (must not exist unless --force)")
    p.add_argument("--force", action="store_true", help="replace an existing DST")
    p.set_defaults(func=_export)

    _add_predict(sub)
    _add_eval(sub)
    from flaxsent.bench.cli import add_bench_parser
    add_bench_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; user errors print one line and exit 2, never a traceback."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FlaxsentError as e:
        print(f"flaxsent {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"flaxsent {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
