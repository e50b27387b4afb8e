"""PyTorch (HF) DistilBERT checkpoint -> flaxsent Flax checkpoint, every key and shape checked."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from flaxsent import checkpoint as ckpt
from flaxsent.config import DistilBertConfig
from flaxsent.errors import CheckpointError

from .mapping import (
    HEAD_TORCH_KEYS,
    MLM_HEAD_TORCH_KEYS,
    canonical_torch_key,
    is_head,
    parameter_table,
)

# Buffers some checkpoints carry that are not parameters.
_IGNORED_BUFFERS = ("distilbert.embeddings.position_ids",)
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass
class ConversionReport:
    """What a conversion did, for the CLI summary and for tests."""

    source: str = ""
    source_format: str = ""
    n_params: int = 0
    dtype: str = "float32"
    fresh_head: bool = False
    skipped: list[str] = dataclasses.field(default_factory=list)
    tokenizer_files: list[str] = dataclasses.field(default_factory=list)

    def summary(self, dst: str) -> str:
        lines = [f"converted {self.source} ({self.source_format}) -> {dst}",
                 f"  parameters: {self.n_params:,} ({self.dtype})"]
        if self.fresh_head:
            lines.append("  classification head: freshly initialised (fine-tune before use)")
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} tensor(s): {', '.join(self.skipped)}")
        tok = ", ".join(self.tokenizer_files) or "none found (prediction needs vocab.txt "\
            "or tokenizer.json)"
        lines.append(f"  tokenizer files: {tok}")
        return "\n".join(lines)


def read_torch_state_dict(folder: Path) -> dict[str, np.ndarray]:
    """The checkpoint's tensors as numpy: safetensors without torch, .bin with weights_only."""
    single = folder / ckpt.TORCH_SAFETENSORS
    if single.is_file():
        return ckpt.read_safetensors(single)
    index = folder / ckpt.TORCH_SAFETENSORS_INDEX
    if index.is_file():
        return _read_sharded(folder, index)
    binary = folder / ckpt.TORCH_BIN
    if binary.is_file():
        return _read_torch_bin(binary)
    raise CheckpointError(f"{folder}: no weights found (looked for {ckpt.TORCH_SAFETENSORS}, "
                          f"{ckpt.TORCH_BIN})")


def _read_sharded(folder: Path, index: Path) -> dict[str, np.ndarray]:
    try:
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (OSError, ValueError, KeyError, AttributeError) as e:
        raise CheckpointError(f"{index}: not a valid safetensors index ({e})") from None
    state: dict[str, np.ndarray] = {}
    for shard in shards:
        state.update(ckpt.read_safetensors(folder / shard))
    return state


def _read_torch_bin(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise CheckpointError(
            f"{path}: reading pytorch_model.bin needs PyTorch (pip install 'flaxsent[torch]'); "
            "or convert the checkpoint to model.safetensors, which needs no torch") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - pickle, zip and OS errors all mean unreadable
        # torch's own message is many lines and suggests weights_only=False: not ours to echo.
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated, corrupt, "
                              "or not a plain state dict of tensors)") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict")
    out = {}
    for key, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"{path}: entry '{key}' is not a tensor")
        if tensor.dtype == torch.bfloat16:  # numpy has no native bfloat16
            import ml_dtypes
            out[key] = tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        else:
            out[key] = tensor.numpy()
    return out


def torch_to_flax_params(state: dict[str, np.ndarray], cfg: DistilBertConfig, *,
                         dtype: str = "float32", fresh_head_seed: int | None = None,
                         ) -> tuple[ckpt.Params, ConversionReport]:
    """Map a PyTorch state dict onto Flax paths; missing, unexpected or mis-shaped is an error.

    `fresh_head_seed` (set when the user asks for `--num-labels`) lets a checkpoint without a
    classification head convert with a freshly initialised one.
    """
    report = ConversionReport(dtype=dtype)
    canon: dict[str, np.ndarray] = {}
    for key, value in state.items():
        new = canonical_torch_key(key)
        if new in canon:
            raise CheckpointError(f"checkpoint holds '{new}' twice (as '{key}' and another name)")
        canon[new] = value
    for key in _IGNORED_BUFFERS:
        canon.pop(key, None)

    table = parameter_table(cfg)
    head_present = [k for k in HEAD_TORCH_KEYS if k in canon]
    fresh_head = not head_present
    if fresh_head and fresh_head_seed is None:
        is_mlm = any(k in canon for k in MLM_HEAD_TORCH_KEYS)
        kind = "a masked-LM (DistilBertForMaskedLM)" if is_mlm else "a bare encoder"
        raise CheckpointError(
            f"the checkpoint has no sequence-classification head (it looks like {kind}); "
            "pass --num-labels N to add a freshly initialised head to fine-tune")
    if fresh_head:
        report.skipped = [k for k in MLM_HEAD_TORCH_KEYS if canon.pop(k, None) is not None]

    wanted = [e for e in table if not (fresh_head and is_head(e))]
    ckpt.check_keys({e.torch_key for e in wanted}, set(canon),
                    "checkpoint tensors do not match a DistilBERT classifier of its config.json")

    target = np.dtype(_np_dtype(dtype))
    rng = np.random.default_rng(fresh_head_seed)
    params: ckpt.Params = {}
    for entry in table:
        if fresh_head and is_head(entry):
            params[entry.flax_path] = _fresh(entry, rng).astype(target)
            continue
        array = canon[entry.torch_key]
        if tuple(array.shape) != entry.torch_shape:
            raise CheckpointError(f"tensor '{entry.torch_key}' has shape {tuple(array.shape)}, "
                                  f"expected {entry.torch_shape} from config.json")
        if array.dtype != target:
            # float32 first: a float16 source cast straight to bfloat16 would round twice.
            array = array.astype(np.float32).astype(target)
        # a transposed view, not a copy: the device (or the safetensors writer) copies it once,
        # so converting in memory never holds a second host copy of the model
        params[entry.flax_path] = array.T if entry.transform == "transpose" else array
    report.fresh_head = fresh_head
    report.n_params = int(sum(v.size for v in params.values()))
    return params, report


def _fresh(entry, rng: np.random.Generator) -> np.ndarray:
    """HF's initialisation of a new head: N(0, 0.02) weights, zero biases."""
    if entry.flax_path.endswith("/kernel"):
        return rng.normal(0.0, 0.02, entry.flax_shape).astype(np.float32)
    return np.zeros(entry.flax_shape, np.float32)


def _np_dtype(name: str):
    if name not in DTYPES:
        raise CheckpointError(f"dtype {name!r} is not supported (choose from {', '.join(DTYPES)})")
    if name == "bfloat16":
        import ml_dtypes
        return ml_dtypes.bfloat16
    return np.float32


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, *,
                       dtype: str = "float32", num_labels: int | None = None,
                       force: bool = False, seed: int = 0) -> ConversionReport:
    """Convert a local HF folder or Hub id into a flaxsent folder (atomically: all or nothing)."""
    _np_dtype(dtype)
    if num_labels is not None and num_labels < 1:
        raise CheckpointError(f"--num-labels must be at least 1, got {num_labels}")
    folder = ckpt.resolve_source(src)
    cfg = ckpt.read_config(folder)
    if ckpt.checkpoint_kind(folder) == "flax" and not any(
            (folder / n).is_file() for n in (ckpt.TORCH_SAFETENSORS, ckpt.TORCH_BIN)):
        raise CheckpointError(f"{folder}: already a flaxsent (Flax) checkpoint; nothing to convert")
    state = read_torch_state_dict(folder)
    has_head = any(canonical_torch_key(k) in HEAD_TORCH_KEYS for k in state)
    if num_labels is not None and not has_head:
        labels = cfg.labels if cfg.num_labels == num_labels else tuple(
            f"LABEL_{i}" for i in range(num_labels))
        passthrough = {**cfg.passthrough, "architectures": ["DistilBertForSequenceClassification"]}
        cfg = cfg.replace(labels=labels, passthrough=passthrough)
    elif num_labels is not None and num_labels != cfg.num_labels:
        raise CheckpointError(f"the checkpoint already has a {cfg.num_labels}-label head; "
                              f"--num-labels {num_labels} only applies to checkpoints without one")
    params, report = torch_to_flax_params(state, cfg, dtype=dtype,
                                          fresh_head_seed=seed if num_labels else None)
    report.source = str(src)
    from_bin = not any((folder / n).is_file()
                       for n in (ckpt.TORCH_SAFETENSORS, ckpt.TORCH_SAFETENSORS_INDEX))
    report.source_format = "pytorch .bin" if from_bin else "safetensors"
    from flaxsent.tokenizer import copy_tokenizer_files
    with ckpt.atomic_output_dir(dst, force=force) as out:
        ckpt.save_flax_checkpoint(out, cfg, params)
        report.tokenizer_files = copy_tokenizer_files(folder, out)
    return report
