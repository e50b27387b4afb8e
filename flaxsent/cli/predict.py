"""`flaxsent predict`: classify every row of a file, one record per row, in order; sharded over
processes with --distributed, and the parts joined with --merge."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from flaxsent.cli.common import classifier_arguments, classifier_options, top_k


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
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
    p.add_argument("--top-k", type=top_k, default=1,
                   help="labels per row: 1 (label, score) or K / 'all' (a labels list)")
    p.add_argument("--logits", action="store_true", help="add the raw logits to each record")
    p.add_argument("--on-error", choices=["fail", "skip"], default="fail",
                   help="a bad row stops the run (fail, default) or gets an error record (skip)")
    p.add_argument("--resume", action="store_true",
                   help="continue a killed run: keep OUTPUT's complete records up to the last "
                        "whole classifier window, append the rest; refused when the input, "
                        "model or options differ from those OUTPUT.run.json recorded")
    p.add_argument("--force", action="store_true", help="overwrite an existing OUTPUT")
    p.add_argument("--csv-safe", action=argparse.BooleanOptionalAction, default=True,
                   help="CSV output: a text cell starting with =, +, -, @, tab or CR (a "
                        "spreadsheet would run it as a formula) gets a leading ' so it shows "
                        "as text; plain numbers such as -0.5 stay (default: on; "
                        "--no-csv-safe writes cells verbatim)")
    classifier_arguments(p)
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
                   help="join the parts of a sharded run into -o OUTPUT; refused unless "
                        "every part recorded its completion and every input row is there once")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from flaxsent.errors import PredictError
    from flaxsent.io.readers import STDIO
    from flaxsent.io.writers import output_format
    from flaxsent.predict.run import predict_file, unmap_freed_blocks
    from flaxsent.predict.shards import Shard, finish_part, merge_parts, process_shard
    if args.merge:
        n = merge_parts(args.merge, args.output, force=args.force, csv_safe=args.csv_safe)
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
    from flaxsent.core.classifier import Classifier
    clf = Classifier.from_pretrained(args.model, dtype=args.dtype, **classifier_options(args))
    shard = Shard(index, count, block=clf.window)
    output = shard.part_path(args.output) if count > 1 else args.output
    k = args.top_k
    if k is not None and k > len(clf.labels):
        k = None if len(clf.labels) > 1 else 1
    result = predict_file(clf, args.input, output, text_column=args.text_column,
                          input_fmt=args.input_format, top_k=k, logits=args.logits,
                          resume=args.resume, force=args.force, on_error=args.on_error,
                          chunk_size=args.chunk_size, progress=not args.no_progress, shard=shard,
                          csv_safe=args.csv_safe)
    if count > 1:
        finish_part(shard, args.output, args.input, wait=args.distributed)
    note = f" ({result.skipped_errors} bad row(s) as error records)" if result.skipped_errors \
        else ""
    resumed = f", after {result.resumed_from} kept" if result.resumed_from else ""
    cut = f"; {result.truncated} text(s) truncated to {clf.tokenizer.max_length} tokens" \
        if result.truncated else ""
    print(f"predicted {result.written} record(s){resumed} -> {output or 'stdout'}{note}{cut}",
          file=sys.stderr)
    return 0
