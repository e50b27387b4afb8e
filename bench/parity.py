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
TOLERANCES = {
    "float32": f"max |Δlogit| <= {FP32_MAX_ABS:g}",
    "bfloat16": f"max |Δlogit| <= {BF16_REL_MAX_ABS:g} x max(1, mean |reference logit|) and "
                f"argmax agreement >= {BF16_MIN_ARGMAX:g}",
}


def bf16_limit(reference: np.ndarray) -> float:
    """The reduced-precision max |Δlogit| allowed against this reference."""
    return BF16_REL_MAX_ABS * max(1.0, float(np.abs(reference).mean()))


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
            labels: Sequence[str], dtype: str) -> dict[str, Any]:
    """max / mean |Δlogit| and argmax agreement, overall and per group, and the verdict.

    groups [N]: each sentence's group (the shape it ran in), an index into `labels`.
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
    limit = FP32_MAX_ABS if dtype == "float32" else bf16_limit(reference)
    ok = finite and overall["max_abs"] <= limit
    if dtype != "float32":
        ok = ok and overall["argmax_agreement"] >= BF16_MIN_ARGMAX
    return {**overall, "finite": finite, "per_shape": per_shape, "tolerance": TOLERANCES[dtype],
            "limit": limit, "parity_ok": bool(ok)}
