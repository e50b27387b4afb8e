"""The peers users would pick, beside PyTorch eager: which of them this host can run, and the
one-time preparation ONNX Runtime needs.

- `torch_autocast_dtypes`: PyTorch mixed precision where the hardware has it (bf16 on a CPU with
  AVX512-BF16 or AMX-BF16; bf16 and fp16 on a GPU).
- `detect`: which optional rows can run here (onnxruntime installed, flaxsent's int8 and ONNX
  Runtime APIs present), and a note for each that cannot.
- `prepare_ort`: the HF PyTorch model through `torch.onnx.export`, ONNX Runtime's BERT fusion and
  `quantize_dynamic` (int8), into the bench's work folder, untimed (its seconds reported apart);
  per-tensor or per-channel int8 weights, whichever agrees better with PyTorch fp32.
- `export_flax_onnx`: the folder flaxsent's own exporter writes (`flaxsent export --format onnx
  --quantize int8`), for the flax-ort rows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from flaxsent.bench.strategies import FLAX_ORT, ONNX_OPSET, TORCH_BATCH, sorted_batches

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of native bf16 matmuls
ORT_EXTRA = ("onnx", "onnxruntime")  # what ort-sorted needs (pip install onnx onnxruntime)
# flaxsent's onnx extra (pyproject): the exporter and the runtime
FLAX_ORT_EXTRA = ("onnx", "onnxruntime", "jax2onnx")
SELECTION_SENTENCES = 1024  # at most this many corpus sentences choose per-tensor / per-channel


# ---- what this host runs ------------------------------------------------------------------


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (Linux), empty where they can't be read."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def torch_autocast_dtypes(torch_device: str, flags: Iterable[str]) -> tuple[str, ...]:
    """The reduced-precision dtypes PyTorch runs with torch.autocast here, as a user would.

    On a GPU: bf16 and fp16. On a CPU: bf16 where it has bf16 matmul instructions (AVX512-BF16
    or AMX-BF16); without them autocast emulates bf16 and is slower than fp32 (no row).
    """
    if torch_device == "cuda":
        return ("bfloat16", "float16")
    flags = set(flags)
    return ("bfloat16",) if any(f in flags for f in CPU_BF16_FLAGS) else ()


def missing_modules(names: Sequence[str]) -> list[str]:
    return [n for n in names if importlib.util.find_spec(n) is None]


@dataclasses.dataclass(frozen=True)
class Peers:
    """Which optional rows this host runs; `skipped` says why each other one does not."""

    torch_autocast: tuple[str, ...] = ()  # dtypes of the torch-sorted[bf16] / [fp16] rows
    ort: bool = False  # ort-sorted and ort-sorted[int8]
    ort_provider: str = "CPUExecutionProvider"
    flax_ort: bool = False  # flax-ort and flax-ort[int8]
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)  # row -> why not

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def detect(torch_device: str, accelerator: bool, flags: Iterable[str] | None = None) -> Peers:
    """The optional rows this host can run (PyTorch on `torch_device`; JAX on an accelerator
    or not), with a note for each it cannot."""
    flags = cpu_flags() if flags is None else flags
    autocast = torch_autocast_dtypes(torch_device, flags)
    skipped: dict[str, str] = {}
    if not autocast:
        skipped["torch-sorted[bf16]"] = (
            "this CPU has no bf16 matmul instructions (avx512_bf16 / amx_bf16 flags): PyTorch "
            "autocast would emulate bf16")
    ort_missing = missing_modules(ORT_EXTRA)
    provider = "CPUExecutionProvider"
    ort = not ort_missing
    if ort_missing:
        skipped["ort-sorted"] = (f"{', '.join(ort_missing)} not installed (pip install onnx "
                                 "onnxruntime, or flaxsent's onnx extra)")
    elif accelerator:
        import onnxruntime
        if torch_device == "cuda" and "CUDAExecutionProvider" in \
                onnxruntime.get_available_providers():
            provider = "CUDAExecutionProvider"
        else:
            ort = False
            skipped["ort-sorted"] = ("onnxruntime has no provider for this accelerator: a CPU "
                                     "row beside accelerator rows would say nothing")
    flax_missing = missing_modules(FLAX_ORT_EXTRA)
    flax_ort = False
    if flax_missing:
        skipped[FLAX_ORT] = (f"{', '.join(flax_missing)} not installed (flaxsent's onnx extra:"
                             " pip install -e '.[onnx]')")
    elif accelerator:
        skipped[FLAX_ORT] = "flaxsent's ONNX Runtime runtime is measured on CPU hosts only"
    else:
        flax_ort = True
    return Peers(torch_autocast=autocast, ort=ort, ort_provider=provider,
                 flax_ort=flax_ort, skipped=skipped)


# ---- ONNX Runtime as a CPU user prepares it -----------------------------------------------


@contextlib.contextmanager
def _quiet():
    """Export and quantization warn at length (tracer warnings, 'consider pre-processing')."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def export_onnx(torch_folder: str | os.PathLike, path: Path) -> dict[str, Any]:
    """The HF model as ONNX through torch.onnx.export (the TorchScript exporter, dynamo=False):
    opset 17, dynamic batch and sequence axes, int64 input_ids / attention_mask -> logits.

    Eager attention: transformers' default (SDPA) exports as a graph ONNX Runtime's BERT fusion
    does not recognise (no Attention node fused), which is not what a user would ship.
    """
    import torch
    import transformers
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        torch_folder, attn_implementation="eager").eval()
    ids = torch.tensor([[101, 2000, 2001, 102], [101, 2002, 102, 0]], dtype=torch.int64)
    mask = (ids != 0).to(torch.int64)
    axes = {"batch": 0, "sequence": 1}
    with _quiet(), torch.inference_mode():
        torch.onnx.export(
            model, (ids, mask), str(path), input_names=["input_ids", "attention_mask"],
            output_names=["logits"], opset_version=ONNX_OPSET, do_constant_folding=True,
            dynamic_axes={"input_ids": {v: k for k, v in axes.items()},
                          "attention_mask": {v: k for k, v in axes.items()},
                          "logits": {0: "batch"}},
            dynamo=False)
    cfg = model.config
    return {"num_heads": int(cfg.n_heads), "hidden_size": int(cfg.dim)}


def fuse_bert(src: Path, dst: Path, num_heads: int, hidden_size: int) -> dict[str, int]:
    """onnxruntime.transformers' BERT fusion; the fused operators it made (name -> count)."""
    from onnxruntime.transformers.optimizer import optimize_model
    with _quiet():
        model = optimize_model(str(src), model_type="bert", num_heads=num_heads,
                               hidden_size=hidden_size)
        model.save_model_to_file(str(dst))
    return {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}


def quantize_int8(src: Path, dst: Path, per_channel: bool) -> None:
    """quantize_dynamic: int8 weights (QInt8, per tensor or per output channel), activations
    quantized on the fly. DefaultTensorType: the fused contrib ops carry no inferred types."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    with _quiet():
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def session_logits(path: Path, tokenizer: Any, texts: Sequence[str], threads: int,
                   provider: str = "CPUExecutionProvider") -> np.ndarray:
    """Logits [N, C] of `texts` through one session on `path` (untimed, for choosing)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=[provider])
    out = None
    for rows, feeds in sorted_batches(tokenizer, texts, TORCH_BATCH, "np"):
        logits = session.run(["logits"], feeds)[0]
        if out is None:
            out = np.empty((len(texts), logits.shape[1]), np.float32)
        out[rows] = logits
    return out


def agreement(reference: np.ndarray, logits: np.ndarray) -> float:
    """Share of sentences whose argmax matches the reference's."""
    return float((np.asarray(logits).argmax(1) == np.asarray(reference).argmax(1)).mean())


def prepare_ort(torch_folder: str | os.PathLike, work: Path, texts: Sequence[str],
                reference: np.ndarray, threads: int,
                provider: str = "CPUExecutionProvider") -> tuple[dict[str, str], dict[str, Any]]:
    """Export, fuse and quantize once, into `work`; the model files by quantization
    ('none', 'int8') and what it took (seconds of each step, fused operators, the int8 choice).

    The int8 weights are quantized per tensor and per output channel, and the variant whose
    argmax agrees more with `reference` (PyTorch fp32) on the first SELECTION_SENTENCES of
    `texts` is kept (per tensor on a tie: the cheaper one).
    """
    import transformers
    work.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {"opset": ONNX_OPSET, "exporter": "torch.onnx.export(dynamo=False)"}
    start = time.perf_counter()
    exported = work / "model.onnx"
    shape = export_onnx(torch_folder, exported)
    info["export_s"] = time.perf_counter() - start
    start = time.perf_counter()
    fused = work / "model_fused.onnx"
    info["fused_operators"] = fuse_bert(exported, fused, **shape)
    info["fuse_s"] = time.perf_counter() - start
    info["fusion"] = {"model_type": "bert", **shape}
    n = min(len(texts), SELECTION_SENTENCES)
    tokenizer = transformers.AutoTokenizer.from_pretrained(torch_folder)
    choices: dict[str, dict[str, Any]] = {}
    for per_channel in (False, True):
        name = "per_channel" if per_channel else "per_tensor"
        path = work / f"model_int8_{name}.onnx"
        start = time.perf_counter()
        quantize_int8(fused, path, per_channel)
        seconds = time.perf_counter() - start
        got = session_logits(path, tokenizer, texts[:n], threads, provider)
        choices[name] = {"quantize_s": seconds, "argmax_agreement": agreement(reference[:n], got),
                         "max_abs": float(np.abs(got - reference[:n]).max()), "path": str(path)}
    best = max(choices, key=lambda k: (choices[k]["argmax_agreement"], k == "per_tensor"))
    info.update(int8_variants=choices, int8_weights=best, selection_sentences=n,
                quantize_s=sum(c["quantize_s"] for c in choices.values()), provider=provider)
    info["prepare_s"] = info["export_s"] + info["fuse_s"] + info["quantize_s"]
    return {"none": str(fused), "int8": choices[best]["path"]}, info


# ---- flaxsent's own exporter --------------------------------------------------------------


def export_flax_onnx(flax_folder: str | os.PathLike, work: Path) -> tuple[str, dict[str, Any]]:
    """`flaxsent export SRC DST --format onnx --quantize int8`, the command a user runs, on the
    folder the flaxsent side loads; the exported folder and what the export took."""
    dst = work / "flax-onnx"
    cmd = [sys.executable, "-m", "flaxsent", "export", str(flax_folder), str(dst), "--format",
           "onnx", "--quantize", "int8"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    info: dict[str, Any] = {"export_s": time.perf_counter() - start,
                            "command": "flaxsent export SRC DST --format onnx --quantize int8"}
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"flaxsent export --format onnx: exit {proc.returncode}: {tail[0]}")
    info["files"] = sorted(p.name for p in dst.iterdir() if p.suffix == ".onnx")
    info["prepare_s"] = info["export_s"]
    return str(dst), info
