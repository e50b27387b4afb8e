"""A state dict through the table, in memory: PyTorch keys -> Flax paths and back, all checked.

No files here: `flaxsent.core.checkpoint` loads an HF folder through `torch_to_flax_params`, and the
two converter commands (`torch_to_flax`, `flax_to_torch`) read and write folders around it.
"""

from __future__ import annotations

import numpy as np

from flaxsent.core.config import DistilBertConfig
from flaxsent.core.mapping import (
    HEAD_TORCH_KEYS,
    MLM_HEAD_TORCH_KEYS,
    Entry,
    canonical_torch_key,
    is_head,
    parameter_table,
)
from flaxsent.errors import CheckpointError

FlatParams = dict[str, np.ndarray]  # '/'-joined Flax path -> array
# Buffers some checkpoints carry that are not parameters.
_IGNORED_BUFFERS = ("distilbert.embeddings.position_ids",)
DTYPES = ("float32", "bfloat16")
_FLOATS = ("float32", "float16", "bfloat16", "float64")  # what a checkpoint may store


def check_keys(expected: set[str], got: set[str], what: str) -> None:
    """Raise naming the missing and unexpected keys (a few of each) when the sets differ."""
    missing, extra = sorted(expected - got), sorted(got - expected)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: {_some(missing)}")
        if extra:
            parts.append(f"unexpected {len(extra)}: {_some(extra)}")
        raise CheckpointError(f"{what} ({'; '.join(parts)})")


def _some(names: list[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (f" (+{len(names) - n} more)" if len(names) > n else "")


def torch_to_flax_params(state: dict[str, np.ndarray], cfg: DistilBertConfig, *,
                         dtype: str = "float32", fresh_head_seed: int | None = None,
                         ) -> tuple[FlatParams, list[str]]:
    """Map a PyTorch state dict onto Flax paths; missing, unexpected or mis-shaped is an error.

    `fresh_head_seed` (set when the user asks for `--num-labels`) lets a checkpoint without a
    classification head convert with a freshly initialised one; the second result names the
    masked-LM head tensors left out then.
    """
    canon: dict[str, np.ndarray] = {}
    for key, value in state.items():
        new = canonical_torch_key(key)
        if new in canon:
            raise CheckpointError(f"checkpoint holds '{new}' twice (as '{key}' and another name)")
        canon[new] = value
    for key in _IGNORED_BUFFERS:
        canon.pop(key, None)

    table = parameter_table(cfg)
    fresh_head = not any(k in canon for k in HEAD_TORCH_KEYS)
    skipped: list[str] = []
    if fresh_head and fresh_head_seed is None:
        is_mlm = any(k in canon for k in MLM_HEAD_TORCH_KEYS)
        kind = "a masked-LM (DistilBertForMaskedLM)" if is_mlm else "a bare encoder"
        raise CheckpointError(
            f"the checkpoint has no sequence-classification head (it looks like {kind}); "
            "pass --num-labels N to add a freshly initialised head to fine-tune")
    if fresh_head:
        skipped = [k for k in MLM_HEAD_TORCH_KEYS if canon.pop(k, None) is not None]

    wanted = [e for e in table if not (fresh_head and is_head(e))]
    check_keys({e.torch_key for e in wanted}, set(canon),
               "checkpoint tensors do not match a DistilBERT classifier of its config.json")

    target = np.dtype(np_dtype(dtype))
    rng = np.random.default_rng(fresh_head_seed)
    params: FlatParams = {}
    for entry in table:
        if fresh_head and is_head(entry):
            params[entry.flax_path] = _fresh(entry, rng).astype(target)
            continue
        array = canon[entry.torch_key]
        if tuple(array.shape) != entry.torch_shape:
            raise CheckpointError(f"tensor '{entry.torch_key}' has shape {tuple(array.shape)}, "
                                  f"expected {entry.torch_shape} from config.json")
        if array.dtype.name not in _FLOATS:  # a cast would silently make a different model
            raise CheckpointError(f"tensor '{entry.torch_key}' has dtype {array.dtype.name}, "
                                  f"not a floating dtype ({', '.join(_FLOATS)}): quantized or "
                                  "otherwise stored weights cannot be converted")
        if array.dtype != target:
            # float32 first: a float16 source cast straight to bfloat16 would round twice.
            array = array.astype(np.float32).astype(target)
        # a transposed view, not a copy: the device (or the safetensors writer) copies it once,
        # so converting in memory never holds a second host copy of the model
        params[entry.flax_path] = array.T if entry.transform == "transpose" else array
    return params, skipped


def flax_to_torch_state(params: FlatParams, cfg: DistilBertConfig) -> dict[str, np.ndarray]:
    """Map flat Flax params back to PyTorch keys; every table entry is used exactly once."""
    table = parameter_table(cfg)
    check_keys({e.flax_path for e in table}, set(params),
               "Flax checkpoint does not match the config")
    state = {}
    for entry in table:
        array = params[entry.flax_path]
        if tuple(array.shape) != entry.flax_shape:
            raise CheckpointError(f"parameter '{entry.flax_path}' has shape {tuple(array.shape)}, "
                                  f"expected {entry.flax_shape}")
        if entry.transform == "transpose":
            array = array.T
        state[entry.torch_key] = np.ascontiguousarray(array)
    return state


def _fresh(entry: Entry, rng: np.random.Generator) -> np.ndarray:
    """HF's initialisation of a new head: N(0, 0.02) weights, zero biases."""
    if entry.flax_path.endswith("/kernel"):
        return rng.normal(0.0, 0.02, entry.flax_shape).astype(np.float32)
    return np.zeros(entry.flax_shape, np.float32)


def np_dtype(name: str) -> type:
    """The numpy dtype of a supported parameter dtype name; an error naming the choices."""
    if name not in DTYPES:
        raise CheckpointError(f"dtype {name!r} is not supported (choose from {', '.join(DTYPES)})")
    if name == "bfloat16":
        import ml_dtypes
        return ml_dtypes.bfloat16
    return np.float32
