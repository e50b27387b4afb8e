"""`flaxsent export`: a Flax checkpoint folder back into an HF PyTorch folder."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("export", help="Flax checkpoint folder -> HF PyTorch folder")
    p.add_argument("src", help="a folder written by `flaxsent convert`")
    p.add_argument("dst", help="output HF folder (must not exist unless --force)")
    p.add_argument("--force", action="store_true", help="replace an existing DST")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from flaxsent.convert.flax_to_torch import export_checkpoint
    written = export_checkpoint(args.src, args.dst, force=args.force)
    print(f"exported {args.src} -> {args.dst} ({', '.join(written)})")
    return 0
