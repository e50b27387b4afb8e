"""`flaxsent convert`: a PyTorch (HF) checkpoint into a Flax checkpoint folder."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("convert", help="PyTorch (HF) checkpoint -> Flax checkpoint folder")
    p.add_argument("src", help="local HF folder or Hugging Face Hub id")
    p.add_argument("dst", help="output folder (must not exist unless --force)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="parameter dtype to store (default float32)")
    p.add_argument("--num-labels", type=int, default=None,
                   help="add a freshly initialised N-label head to a checkpoint without one")
    p.add_argument("--seed", type=int, default=0, help="seed of a fresh head (default 0)")
    p.add_argument("--force", action="store_true", help="replace an existing DST")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from flaxsent.convert.torch_to_flax import convert_checkpoint
    report = convert_checkpoint(args.src, args.dst, dtype=args.dtype, num_labels=args.num_labels,
                                force=args.force, seed=args.seed)
    print(report.summary(args.dst))
    return 0
