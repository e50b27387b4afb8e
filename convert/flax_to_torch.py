"""flaxsent Flax checkpoint -> HF PyTorch folder that transformers loads, bit for bit."""

from __future__ import annotations

import os

from flaxsent.core import checkpoint as ckpt
from flaxsent.core.state_dict import flax_to_torch_state
from flaxsent.errors import CheckpointError


def export_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, *,
                      force: bool = False) -> list[str]:
    """Write a converted folder back out as an HF folder (model.safetensors, config, tokenizer)."""
    from flaxsent.core.tokenizer import copy_tokenizer_files
    folder = ckpt.resolve_source(src)
    if ckpt.checkpoint_kind(folder) != "flax":
        raise CheckpointError(f"{folder}: not a flaxsent checkpoint (no {ckpt.FLAX_WEIGHTS}); "
                              "it is already a PyTorch folder")
    cfg = ckpt.read_config(folder)
    state = flax_to_torch_state(ckpt.load_flax_params(folder), cfg)
    with ckpt.checkpoint_output_dir(dst, force=force, source=folder) as out:
        cfg.save_json(out / ckpt.CONFIG)
        ckpt.write_safetensors(out / ckpt.TORCH_SAFETENSORS, state, {"format": "pt"})
        written = [ckpt.CONFIG, ckpt.TORCH_SAFETENSORS, *copy_tokenizer_files(folder, out)]
    return written
