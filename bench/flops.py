"""Model FLOPs of DistilBERT on a corpus, and model FLOP utilisation (MFU) against a device's
published peak.

Model FLOPs count the useful work on real tokens only (padding excluded), so every strategy is
credited the same FLOPs for the same corpus; a strategy's MFU is those FLOPs over its median
pass time over the device's peak for the row's arithmetic:

- per real token, 2 x the encoder's matmul parameters: each layer's q, k, v and output
  projections (4 d^2) and its feed-forward (2 d h);
- per real token and layer, attention's 4 L d: QK^T and the weighted sum over V, L the
  sentence's own length;
- per sentence, the classification head on [CLS]: 2 (d^2 + d C).

Embedding lookups, LayerNorm, softmax and GELU are not counted (as usual for MFU).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# Published dense peaks (no structured sparsity) in TFLOP/s, from NVIDIA's datasheets. Matched
# against the device name in this order (the first substring that occurs wins).
# fp32: CUDA cores; tf32: tensor cores (fp32 at the backend's default precision).
PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H200", {"bf16": 989.0, "fp16": 989.0, "tf32": 494.5, "fp32": 67.0, "int8": 1979.0}),
    ("H100 PCIe", {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0, "fp32": 51.0, "int8": 1513.0}),
    ("H100 NVL", {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0, "int8": 1670.5}),
    ("H100", {"bf16": 989.0, "fp16": 989.0, "tf32": 494.5, "fp32": 67.0, "int8": 1979.0}),
    ("A100", {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5, "int8": 624.0}),
    ("L4", {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3, "int8": 242.0}),
)


def _dims(config: Any) -> tuple[int, int, int, int]:
    """(dim, hidden_dim, n_layers, n_labels) of a flaxsent DistilBertConfig or an HF dict."""
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    labels = get("labels") or get("id2label") or {0: 0, 1: 1}
    return int(get("dim")), int(get("hidden_dim")), int(get("n_layers")), len(labels)


def matmul_params(config: Any) -> int:
    """The encoder's matmul weights a token goes through: n_layers x (4 d^2 + 2 d h)."""
    d, h, layers, _ = _dims(config)
    return layers * (4 * d * d + 2 * d * h)


def model_flops(config: Any, lengths: Sequence[int]) -> float:
    """Model FLOPs of one pass over sentences of these real lengths ([CLS]/[SEP] counted)."""
    d, _, layers, labels = _dims(config)
    n = np.asarray(lengths, np.float64)
    per_token = 2.0 * matmul_params(config)
    attention = 4.0 * layers * d * float((n * n).sum())  # each token attends over its sentence
    head = 2.0 * (d * d + d * labels) * len(n)
    return per_token * float(n.sum()) + attention + head


def arithmetic(record: dict[str, Any]) -> str:
    """The peak a row is held to: 'bf16', 'fp16', 'tf32', 'fp32' or 'int8'."""
    if record.get("quantize") == "int8":
        return "int8"
    if record["dtype"] == "bfloat16":
        return "bf16"
    if record["dtype"] == "float16":
        return "fp16"
    # fp32 at the backend's default precision runs on TF32 tensor cores; PyTorch's fp32 rows
    # turn TF32 off (the reference), flaxsent's 'highest' is exact fp32
    return "tf32" if record.get("precision") == "default" else "fp32"


def peak_tflops(device_name: str | None, kind: str) -> float | None:
    """The device's published dense peak for `kind` in TFLOP/s, None when not in the table."""
    if not device_name:
        return None
    for key, peaks in PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return peaks.get(kind)
    return None


def add_flops_figures(record: dict[str, Any], flops: float, device_name: str | None) -> None:
    """model TFLOP/s of a timed record and, where the device's peak is known, its MFU.

    device_name: the accelerator the row ran on (None: a CPU row, no peak: MFU stays None).
    """
    record["model_flops"] = flops
    record["model_tflops_per_s"] = flops / record["median_s"] / 1e12
    kind = arithmetic(record)
    peak = peak_tflops(device_name, kind)
    record["peak_tflops"] = peak
    record["peak_kind"] = kind if peak else None
    record["mfu"] = record["model_tflops_per_s"] / peak if peak else None
