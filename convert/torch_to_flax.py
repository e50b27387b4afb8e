"""PyTorch (HF) DistilBERT checkpoint -> flaxsent Flax checkpoint, every key and shape checked."""

from __future__ import annotations

import dataclasses
import os

from flaxsent.core import checkpoint as ckpt
from flaxsent.core.mapping import HEAD_TORCH_KEYS, canonical_torch_key
from flaxsent.core.state_dict import np_dtype, torch_to_flax_params
from flaxsent.errors import CheckpointError


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


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, *,
                       dtype: str = "float32", num_labels: int | None = None,
                       force: bool = False, seed: int = 0) -> ConversionReport:
    """Convert a local HF folder or Hub id into a flaxsent folder (atomically: all or nothing)."""
    np_dtype(dtype)
    if num_labels is not None and num_labels < 1:
        raise CheckpointError(f"--num-labels must be at least 1, got {num_labels}")
    folder = ckpt.resolve_source(src)
    cfg = ckpt.read_config(folder)
    if ckpt.checkpoint_kind(folder) == "flax" and not any(
            (folder / n).is_file() for n in (ckpt.TORCH_SAFETENSORS, ckpt.TORCH_BIN)):
        raise CheckpointError(f"{folder}: already a flaxsent (Flax) checkpoint; nothing to convert")
    state = ckpt.read_torch_state_dict(folder)
    has_head = any(canonical_torch_key(k) in HEAD_TORCH_KEYS for k in state)
    if num_labels is not None and not has_head:
        labels = cfg.labels if cfg.num_labels == num_labels else tuple(
            f"LABEL_{i}" for i in range(num_labels))
        passthrough = {**cfg.passthrough, "architectures": ["DistilBertForSequenceClassification"]}
        cfg = cfg.replace(labels=labels, passthrough=passthrough)
    elif num_labels is not None and num_labels != cfg.num_labels:
        raise CheckpointError(f"the checkpoint already has a {cfg.num_labels}-label head; "
                              f"--num-labels {num_labels} only applies to checkpoints without one")
    params, skipped = torch_to_flax_params(state, cfg, dtype=dtype,
                                           fresh_head_seed=seed if num_labels else None)
    from_bin = not any((folder / n).is_file()
                       for n in (ckpt.TORCH_SAFETENSORS, ckpt.TORCH_SAFETENSORS_INDEX))
    report = ConversionReport(source=str(src),
                              source_format="pytorch .bin" if from_bin else "safetensors",
                              n_params=int(sum(v.size for v in params.values())), dtype=dtype,
                              fresh_head=not has_head, skipped=skipped)
    from flaxsent.core.tokenizer import copy_tokenizer_files
    with ckpt.checkpoint_output_dir(dst, force=force, source=folder) as out:
        ckpt.save_flax_checkpoint(out, cfg, params)
        report.tokenizer_files = copy_tokenizer_files(folder, out)
    return report
