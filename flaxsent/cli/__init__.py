"""The `flaxsent` command: every subcommand's arguments (convert, export, predict, eval, train,
probe, serve, aot; bench registers its own), one line per user error, exit 2. What each
subcommand then does is in `commands.py`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from flaxsent.cli import commands
from flaxsent.core.devices import pin_cpu_where_no_accelerator
from flaxsent.errors import FlaxsentError

Command = Callable[[argparse.Namespace], int]


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
                        "whole classifier window, append the rest; refused when the input, "
                        "model or options differ from those OUTPUT.run.json recorded")
    p.add_argument("--force", action="store_true", help="overwrite an existing OUTPUT")
    p.add_argument("--csv-safe", action=argparse.BooleanOptionalAction, default=True,
                   help="CSV output: a text cell starting with =, +, -, @, tab or CR (a "
                        "spreadsheet would run it as a formula) gets a leading ' so it shows "
                        "as text; plain numbers such as -0.5 stay (default: on; "
                        "--no-csv-safe writes cells verbatim)")
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
                   help="join the parts of a sharded run into -o OUTPUT; refused unless "
                        "every part recorded its completion and every input row is there once")
    p.set_defaults(func=commands.run_predict)


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
    p.set_defaults(func=commands.run_eval)


def _add_train(sub: Any) -> None:
    p = sub.add_parser(
        "train", help="fine-tune a classifier (the model card's recipe by default), packed",
        description="Fine-tune a DistilBERT classifier on a labelled file with optax: AdamW, "
                    "linear warm-up and decay, texts packed several to a row.")
    p.add_argument("--model", "-m", required=True,
                   help="converted flaxsent folder, HF folder or Hub id (a masked-LM checkpoint "
                        "needs --num-labels)")
    p.add_argument("--data", required=True,
                   help="training file with a label column: SST-2 TSV (sentence<TAB>label), "
                        "CSV, JSONL or Parquet")
    p.add_argument("--out", required=True, help="output folder: a flaxsent checkpoint, plus "
                                                "metrics.jsonl, curves.png and train_state/")
    p.add_argument("--eval", default=None, help="labelled file scored at each epoch's end")
    p.add_argument("--num-labels", type=int, default=None,
                   help="a fresh N-label head on a checkpoint without one")
    p.add_argument("--label-names", default=None, metavar="A,B,...",
                   help="names of the labels in the output (default: the model's)")
    p.add_argument("--text-column", default=None,
                   help="column holding the text (default: text, else sentence)")
    p.add_argument("--label-column", default="label", help="column holding the label")
    r = p.add_argument_group("the recipe (defaults: the model card's)")
    r.add_argument("--learning-rate", type=float, default=1e-5, help="peak (default 1e-5)")
    r.add_argument("--batch-size", type=int, default=32, help="examples a step (default 32)")
    r.add_argument("--warmup-steps", type=int, default=600,
                   help="linear warm-up from 0 (default 600), then linear decay to 0")
    r.add_argument("--epochs", type=int, default=3, help="passes over --data (default 3)")
    r.add_argument("--max-steps", type=int, default=None,
                   help="stop after N steps; then also the schedule's length")
    r.add_argument("--max-length", type=int, default=128,
                   help="truncate examples to N tokens (default 128)")
    r.add_argument("--weight-decay", type=float, default=0.0,
                   help="AdamW decay, never on biases or LayerNorm (default 0)")
    r.add_argument("--max-grad-norm", type=float, default=1.0,
                   help="clip the gradient's global norm (default 1.0, as transformers' "
                        "Trainer; 0 turns it off)")
    r.add_argument("--seed", type=int, default=0,
                   help="data order, dropout and a fresh head (default 0)")
    r.add_argument("--grad-accum", type=int, default=1,
                   help="split each step into N micro-batches (default 1)")
    r.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="compute dtype; master weights stay float32")
    r.add_argument("--no-dropout", action="store_true", help="train without dropout")
    r.add_argument("--no-shuffle", action="store_true", help="keep the file's order")
    r.add_argument("--no-packing", action="store_true",
                   help="one example a row, padded to --max-length (slower; for comparison)")
    p.add_argument("--save-every", type=int, default=500,
                   help="save the train state every N steps (and at each epoch's end)")
    p.add_argument("--devices", type=int, default=None,
                   help="train data-parallel on the first N local devices (default: all)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last saved state")
    p.add_argument("--force", action="store_true", help="replace an earlier run in --out")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard event files (needs flaxsent[tensorboard])")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=commands.run_train)


def _add_probe(sub: Any) -> None:
    p = sub.add_parser(
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
    _classifier_arguments(p)
    p.set_defaults(func=commands.run_probe)


def _add_serve(sub: Any) -> None:
    p = sub.add_parser(
        "serve", help="HTTP server: the model card's /score and TEI's /predict, /info, "
                      "/health, /metrics",
        description="Serve MODEL over HTTP. Concurrent requests are coalesced into the "
                    "engine's packed batches. SIGTERM: new requests get 503, requests in "
                    "flight finish, exit 0.")
    p.add_argument("model", help="converted flaxsent folder, HF folder or Hub id")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (default 8080; 0: any free)")
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' on every route but /health and "
                        "/metrics (or set FLAXSENT_API_KEY, which keeps it out of `ps`)")
    p.add_argument("--max-batch-tokens", type=int, default=None,
                   help="tokens per device batch (default: the platform's budget)")
    p.add_argument("--max-wait-ms", type=float, default=2.0,
                   help="how long a request waits for others to share its batch (default 2)")
    p.add_argument("--max-client-batch-size", type=int, default=32,
                   help="most inputs in one request (default 32; more: 422)")
    p.add_argument("--max-concurrent-requests", type=int, default=512,
                   help="most inference requests at once (default 512; more: 429)")
    p.add_argument("--payload-limit", type=int, default=2_000_000,
                   help="largest request body in bytes (default 2000000; more: 413)")
    p.add_argument("--tokenization-workers", type=int, default=2,
                   help="threads tokenizing requests (default 2)")
    p.add_argument("--access-log", action="store_true", help="log every request")
    _classifier_arguments(p)
    p.set_defaults(func=commands.run_serve)


def _add_aot(sub: Any) -> None:
    p = sub.add_parser(
        "aot", help="compile every program for a TPU slice that is not here (needs libtpu)",
        description="Compile the classifier's whole shape plan (mesh engine and pmap) and a "
                    "training step ahead of time for a named TPU slice, with libtpu on this "
                    "machine; report XLA's FLOPs, bytes and per-device memory, the tile "
                    "padding, compile times and a roofline ESTIMATE of sentences/s.")
    p.add_argument("--topology", required=True,
                   help="the slice, chip:AxB[xC]: e.g. v5e:2x2, v6e:2x2, v4:2x2x1, v5p:2x2x1")
    p.add_argument("--model", "-m", default=None,
                   help="checkpoint folder or Hub id; only its config and tokenizer are read "
                        "(default: the bench's embedded full-size model)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                   help="compute and parameter dtype (default bfloat16, TPU's native)")
    p.add_argument("--out", default=None, help="folder for aot.json and aot.md")
    p.add_argument("--no-pmap", action="store_true", help="skip the pmap entry point")
    p.add_argument("--no-train", action="store_true", help="skip the training step")
    p.set_defaults(func=commands.run_aot)


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
    p.set_defaults(func=commands.run_convert)

    p = sub.add_parser("export", help="Flax checkpoint folder -> HF PyTorch folder")
    p.add_argument("src", help="a folder written by `flaxsent convert`")
    p.add_argument("dst", help="output HF folder (must not exist unless --force)")
    p.add_argument("--force", action="store_true", help="replace an existing DST")
    p.set_defaults(func=commands.run_export)

    _add_predict(sub)
    _add_eval(sub)
    _add_train(sub)
    _add_probe(sub)
    _add_serve(sub)
    _add_aot(sub)
    from flaxsent.bench.cli import add_bench_parser
    add_bench_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; user errors print one line and exit 2, never a traceback."""
    pin_cpu_where_no_accelerator()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FlaxsentError as e:
        print(f"flaxsent {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # stdout's reader went away (`| head`): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second failure
        return 1
    except OSError as e:  # the system refused (a full disk, a permission): one line too
        where = f"{e.filename}: " if e.filename else ""
        print(f"flaxsent {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"flaxsent {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
