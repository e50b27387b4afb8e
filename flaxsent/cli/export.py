"""`flaxsent export`: a Flax checkpoint folder back into an HF PyTorch folder (`--format torch`,
the default), or any checkpoint folder into ONNX graphs (`--format onnx`)."""

from __future__ import annotations

import argparse
from typing import Any

from flaxsent.errors import FlaxsentError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("export", help="Flax checkpoint folder -> HF PyTorch folder, or "
                                             "any checkpoint -> ONNX (--format onnx)")
    p.add_argument("src", help="a folder written by `flaxsent convert`; for --format onnx any "
                               "folder flaxsent loads (Flax, HF PyTorch, `flaxsent train` "
                               "output) or Hub id")
    p.add_argument("dst", help="output folder (must not exist unless --force)")
    p.add_argument("--format", choices=["torch", "onnx"], default="torch",
                   help="torch (default): model.safetensors for transformers; onnx: model.onnx "
                        "(HF's interface, for ONNX Runtime and Optimum) and model_packed.onnx "
                        "(flaxsent's onnxruntime runtime)")
    p.add_argument("--quantize", choices=["int8"], default=None,
                   help="--format onnx: also write model_quantized.onnx (and its packed twin), "
                        "ONNX Runtime's dynamic int8 quantization")
    p.add_argument("--opset", type=int, default=None,
                   help="--format onnx: the ONNX opset, 17 to 23 (default 17)")
    p.add_argument("--force", action="store_true", help="replace an existing DST")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if args.format == "torch":
        if args.quantize is not None or args.opset is not None:
            raise FlaxsentError("--quantize and --opset apply to --format onnx")
        from flaxsent.convert.flax_to_torch import export_checkpoint
        written = export_checkpoint(args.src, args.dst, force=args.force)
        print(f"exported {args.src} -> {args.dst} ({', '.join(written)})")
        return 0
    try:
        from flaxsent.convert import onnx_export
    except ModuleNotFoundError as e:
        if (e.name or "flaxsent").split(".")[0] == "flaxsent":
            raise
        raise FlaxsentError(f"ONNX export needs {e.name}: pip install 'flaxsent[onnx]'") from None
    opset = onnx_export.DEFAULT_OPSET if args.opset is None else args.opset
    report = onnx_export.export_onnx(args.src, args.dst, quantize=args.quantize, opset=opset,
                                     force=args.force)
    print(report.summary(args.dst))
    return 0
