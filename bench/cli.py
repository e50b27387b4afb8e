"""`flaxsent bench` and `python -m flaxsent.bench`: the command line of the harness."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from flaxsent.bench.strategies import NAMES

from flaxsent.core.devices import pin_cpu_where_no_accelerator
from flaxsent.errors import FlaxsentError

DESCRIPTION = ("Benchmark PyTorch against flaxsent on the same inputs: throughput, padding, "
               "compile, first result, memory, and logit parity per bucket.")


def configure_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the bench's options to a parser (the subcommand's or the module's)."""
    p.add_argument("--model", default=None,
                   help="HF PyTorch DistilBERT folder or Hub id (default: the embedded "
                        "DistilBERT-base SST-2 architecture with seeded RANDOM weights)")
    p.add_argument("--data", default=None,
                   help="sentences, read as `flaxsent predict` reads its input: .txt (one a "
                        "line), .jsonl, .csv/.tsv or .parquet with a 'text' (else 'sentence') "
                        "column; a bad row stops the bench (default: the embedded 872-sentence "
                        "SST-2-like corpus)")
    p.add_argument("--out", default=None,
                   help="output folder (default: bench/results/<UTC timestamp>)")
    p.add_argument("--dtype", default="both", choices=["float32", "bfloat16", "both"],
                   help="flaxsent dtypes (default both: fp32 everywhere, bf16 for flax-bucketed;"
                        " every strategy with --full)")
    p.add_argument("--devices", type=int, default=None,
                   help="devices for the data-parallel strategies (default: all local)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="tiny model, 64 sentences, 1 pass (smoke test)")
    size.add_argument("--full", action="store_true",
                      help="more passes, bf16 for every flaxsent strategy, torch.compile")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed passes per strategy (default 3; --quick 1; --full 5)")
    p.add_argument("--budget", type=float, default=None, dest="budget_s", metavar="SECONDS",
                   help="stop repeating once a strategy's passes would exceed this "
                        "(default 60; --full 600)")
    p.add_argument("--only", default=None, metavar="NAMES",
                   help=f"comma-separated strategies to run ({', '.join(NAMES)}); "
                        "torch-pipeline always runs as the reference; a name brings all its "
                        "rows (ort-sorted: fp32 and int8)")
    p.add_argument("--no-probes", action="store_false", dest="probes",
                   help="skip the fresh-process figures (compile, first result, memory)")
    p.add_argument("--seed", type=int, default=0, help="seed of the embedded corpus (default 0)")
    p.add_argument("--sentences", type=int, default=None, metavar="N",
                   help="sentences of the embedded corpus, or the first N of --data (default "
                        "872 on a CPU, 872 x 64 on an accelerator so a pass lasts seconds; "
                        "--quick 64)")
    t = p.add_argument_group("training steps (--train)")
    t.add_argument("--train", action="store_true",
                   help="benchmark training steps instead: flaxsent packed and padded to 128, "
                        "PyTorch padded to 128 and length-grouped (writes train.json/.md/.png)")
    t.add_argument("--steps", type=int, default=None,
                   help="timed steps per strategy with --train (default 6; --quick 2)")
    return p


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    """Register `flaxsent bench` on the flaxsent command's subparsers."""
    p = subparsers.add_parser("bench", help="benchmark and parity check against PyTorch",
                              description=DESCRIPTION)
    configure_parser(p)
    p.set_defaults(func=run_bench)
    return p


def options_from_args(args: argparse.Namespace):
    from flaxsent.bench.harness import BenchOptions
    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    return BenchOptions(model=args.model, data=args.data, out=args.out, dtype=args.dtype,
                        devices=args.devices, quick=args.quick, full=args.full,
                        repeats=args.repeats, budget_s=args.budget_s, only=only,
                        probes=args.probes, seed=args.seed, sentences=args.sentences)


def run_train(args: argparse.Namespace) -> int:
    """`--train`: training steps side by side; 0 once the reports are written."""
    from flaxsent.bench.train_bench import TrainBenchOptions, markdown, run_train_bench
    steps = args.steps if args.steps is not None else (2 if args.quick else 6)
    if steps < 1:
        raise FlaxsentError(f"--steps {steps}: must be a positive integer")
    record = run_train_bench(TrainBenchOptions(model=args.model, data=args.data, out=args.out,
                                               steps=steps, quick=args.quick, seed=args.seed))
    print(markdown(record))
    print(f"reports: {record['out']}/train.json, train.md, train.png", file=sys.stderr)
    return 0


def run_bench(args: argparse.Namespace) -> int:
    """Run the bench: 0 when every strategy is within parity tolerance, 1 otherwise."""
    if args.train:
        return run_train(args)
    from flaxsent.bench.harness import run_harness
    result = run_harness(options_from_args(args))
    print(f"reports: {result.out_dir}/results.json, results.md, chart.png", file=sys.stderr)
    return result.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m flaxsent.bench`: user errors print one line and exit 2."""
    pin_cpu_where_no_accelerator()
    parser = configure_parser(argparse.ArgumentParser(prog="python -m flaxsent.bench",
                                                      description=DESCRIPTION))
    args = parser.parse_args(argv)
    try:
        return run_bench(args)
    except FlaxsentError as e:
        print(f"flaxsent bench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("flaxsent bench: interrupted", file=sys.stderr)
        return 130
