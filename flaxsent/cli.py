"""The `flaxsent` command: convert, export, predict, eval, bench."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

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

    from flaxsent.bench.cli import add_bench_parser

    from . import evaluate, predict
    predict.add_parser(sub)
    evaluate.add_parser(sub)
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
