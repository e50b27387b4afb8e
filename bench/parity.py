"""Parity of a strategy's logits against the PyTorch fp32 reference: overall and per shape."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

FP32_MAX_ABS = 1e-4  # fp32 must match PyTorch to this max |Δlogit| on every sentence
# bf16 (and fp32 at reduced precision) keeps about 3 significant digits, so its error grows
# with the logits: flagged past this share of the reference's scale, max(1, mean |logit|) ...
BF16_REL_MAX_ABS = 0.1
BF16_MIN_ARGMAX = 0.99  # ... or below this argmax agreement
# int8 (flaxsent's JAX engine, its ONNX Runtime runtime, ONNX Runtime's quantize_dynamic): an
# int8 step is 1/127 of a whole row's or tensor's range, not of each value, so its error is
# coarser than bf16's; the argmax agreement decides, the |Δ| bound only catches a broken path
INT8_REL_MAX_ABS = 0.25
INT8_MIN_ARGMAX = 0.985
TOLERANCES = {
    "float32": f"max |Δlogit| <= {FP32_MAX_ABS:g}",
    "bfloat16": f"max |Δlogit| <= {BF16_REL_MAX_ABS:g} x max(1, mean |reference logit|) and "
                f"argmax agreement >= {BF16_MIN_ARGMAX:g}",
    "int8": f"max |Δlogit| <= {INT8_REL_MAX_ABS:g} x max(1, mean |reference logit|) and "
            f"argmax agreement >= {INT8_MIN_ARGMAX:g}",
}
# each reduced-precision tolerance: (share of the reference's scale, least argmax agreement)
REDUCED = {"bfloat16": (BF16_REL_MAX_ABS, BF16_MIN_ARGMAX),
           "int8": (INT8_REL_MAX_ABS, INT8_MIN_ARGMAX)}


def bf16_limit(reference: np.ndarray, share: float = BF16_REL_MAX_ABS) -> float:
    """The reduced-precision max |Δlogit| allowed against this reference."""
    return share * max(1.0, float(np.abs(reference).mean()))


def tolerance_for(dtype: str, precision: str = "highest", quantize: str | None = None) -> str:
    """Which tolerance a row is held to: 'float32', 'bfloat16' (bf16, fp16, and fp32 at a
    backend's reduced default precision) or 'int8'."""
    if quantize == "int8":
        return "int8"
    if dtype != "float32" or precision != "highest":
        return "bfloat16"
    return "float32"


def logit_scale(reference: np.ndarray) -> dict[str, float]:
    """How large the reference's logits are: a |Δlogit| means little without it."""
    magnitude = np.abs(np.asarray(reference, np.float64))
    return {"mean_abs": float(magnitude.mean()), "max_abs": float(magnitude.max())}


def _stats(delta: np.ndarray, agree: np.ndarray) -> dict[str, float]:
    return {"n": int(delta.shape[0]),
            "max_abs": float(delta.max()) if delta.size else 0.0,
            "mean_abs": float(delta.mean()) if delta.size else 0.0,
            "argmax_agreement": float(agree.mean()) if agree.size else 1.0}


def compare(reference: np.ndarray, logits: np.ndarray, groups: np.ndarray,
            labels: Sequence[str], dtype: str, *, random_weights: bool = False) -> dict[str, Any]:
    """max / mean |Δlogit| and argmax agreement, overall and per group, and the verdict.

    groups [N]: each sentence's group (the shape it ran in), an index into `labels`.
    dtype: the tolerance, a key of TOLERANCES ('float32', 'bfloat16' or 'int8').
    random_weights: int8's agreement floor is then reported, not a failure: int8 scales follow
    the ranges of weights and activations, and random weights have none a trained model has
    (the same JAX int8 path agrees 95.6% on the embedded default, 99.4% on a fine-tuned model).
    """
    reference = np.asarray(reference, np.float64)
    logits = np.asarray(logits, np.float64)
    if reference.shape != logits.shape:
        raise ValueError(f"logits of shape {logits.shape} against a reference of shape "
                         f"{reference.shape}")
    delta = np.abs(logits - reference).max(axis=1)  # [N] worst label per sentence
    agree = logits.argmax(axis=1) == reference.argmax(axis=1)  # [N]
    finite = bool(np.isfinite(logits).all())
    overall = _stats(delta, agree)
    per_shape = []
    for i, label in enumerate(labels):
        rows = groups == i
        if rows.any():
            per_shape.append({"shape": label, **_stats(delta[rows], agree[rows])})
    limit = FP32_MAX_ABS if dtype == "float32" else bf16_limit(reference, REDUCED[dtype][0])
    ok = finite and overall["max_abs"] <= limit
    min_argmax = None if dtype == "float32" else REDUCED[dtype][1]
    agreement_ok = min_argmax is None or overall["argmax_agreement"] >= min_argmax
    agreement_judged = not (random_weights and dtype == "int8")
    return {**overall, "finite": finite, "per_shape": per_shape, "tolerance": TOLERANCES[dtype],
            "tolerance_class": dtype, "limit": limit, "min_argmax": min_argmax,
            "agreement_ok": bool(agreement_ok), "agreement_judged": agreement_judged,
            "parity_ok": bool(ok and (agreement_ok or not agreement_judged))}
