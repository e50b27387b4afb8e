"""`flaxsent aot`: compile every program for a TPU slice that is not here (needs libtpu)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
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
    p.add_argument("--quantize", default="none", choices=["none", "int8"],
                   help="int8: compile every forward program a second time with the encoder's "
                        "dense layers as int8 x int8 -> int32 matmuls, reported beside the "
                        "--dtype ones (default: none)")
    p.add_argument("--out", default=None, help="folder for aot.json and aot.md")
    p.add_argument("--no-pmap", action="store_true", help="skip the pmap entry point")
    p.add_argument("--no-train", action="store_true", help="skip the training step")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from flaxsent.aot.compile import compile_for_topology
    from flaxsent.aot.report import markdown, to_json, write_report
    result = compile_for_topology(args.topology, args.model, args.dtype, pmap=not args.no_pmap,
                                  train=not args.no_train, quantize=args.quantize,
                                  progress=lambda line: print(line, file=sys.stderr, flush=True))
    report = to_json(result)
    print(markdown(report))
    if args.out:
        print(f"wrote {write_report(report, args.out)}", file=sys.stderr)
    return 0
