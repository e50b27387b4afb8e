"""What several subcommands share: `--top-k`, the Classifier's
`--dtype/--quantize/--devices/--max-length`, and an options dataclass's defaults and values from
the parsed arguments.

Light on purpose, like every parser module: building the parser imports no jax.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from types import SimpleNamespace
from typing import Any, TypeVar

T = TypeVar("T")


def top_k(value: str) -> int | None:
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


def classifier_arguments(p: argparse.ArgumentParser) -> None:
    """--dtype, --quantize, --runtime, --devices and --max-length (predict, eval, probe,
    serve)."""
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--quantize", default="none", choices=["none", "int8"],
                   help="int8: the int8 variant of the runtime; in JAX the encoder's dense "
                        "layers run as int8 x int8 -> int32 matmuls, weights quantized per "
                        "output channel at load, activations per token (default: none)")
    p.add_argument("--runtime", default="jax", choices=["jax", "onnxruntime"],
                   help="jax (default): the Flax model, compiled; onnxruntime: the folder's "
                        "ONNX graphs (flaxsent export --format onnx) through ONNX Runtime, "
                        "same plan and outputs")
    p.add_argument("--devices", type=int, default=None,
                   help="use the first N local devices (default: all)")
    p.add_argument("--max-length", type=int, default=None,
                   help="truncate texts to N tokens (default: the model's limit)")


def classifier_options(args: argparse.Namespace) -> dict[str, Any]:
    """The Classifier options `--quantize`, `--devices` and `--max-length` set (predict, eval,
    probe, serve)."""
    options: dict[str, Any] = {}
    if getattr(args, "quantize", "none") != "none":
        options["quantize"] = args.quantize
    if getattr(args, "runtime", "jax") != "jax":
        options["runtime"] = args.runtime
    if args.devices is not None:
        options["devices"] = args.devices
    if args.max_length is not None:
        options["max_length"] = args.max_length
    return options


def defaults_of(options: type) -> SimpleNamespace:
    """The defaults of an options dataclass's fields, by name (fields without one left out):
    what a parser's `default=` and help texts are taken from."""
    return SimpleNamespace(**{f.name: f.default for f in dataclasses.fields(options)
                              if f.default is not dataclasses.MISSING})


def options_from(options: type[T], args: argparse.Namespace, **given: Any) -> T:
    """An options dataclass from the parsed arguments: each field from the argument of the same
    name, unless `given` (the fields whose flag is negated, renamed or converted)."""
    names = {f.name for f in dataclasses.fields(options)}
    return options(**{**{k: v for k, v in vars(args).items() if k in names}, **given})


def number(value: float) -> str:
    """A float as help texts write it: 1e-05 as 1e-5, 2.0 as 2."""
    return re.sub(r"e([+-])0*(\d)", r"e\1\2", f"{value:g}")
