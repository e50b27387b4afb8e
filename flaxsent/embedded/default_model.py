"""The embedded default model: DistilBERT-base SST-2 architecture with seeded random weights.

Built locally through transformers (no download), saved once into a cache folder whose name
hashes everything the weights depend on, and reused by later runs. The weights are random (every
report says so) but scaled so the logits are as large as a trained SST-2 classifier's: a bf16
|Δlogit| next to logits of 2-4 means what it would mean for the real model.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from flaxsent.core.config import BASE, TINY, DistilBertConfig
from flaxsent.embedded import vocab
from flaxsent.errors import WriteError
from flaxsent.io import durable

SEED = 0
MARKER = "bench_default.json"  # written last: a folder without it is unfinished
_LAYOUT = 2  # bump when the folder's contents change (2: generated vocab, scaled weights)
# Every weight and bias ~ N(0, INIT_STD^2), LayerNorm scales 1 + N(0, 0.1^2), as in the full-size
# parity tests: unlike transformers' init (std 0.02), the [CLS] state then depends on the sentence.
INIT_STD = 0.05
# The classifier layer (last linear) times this, so mean |logit| on the embedded corpus is about
# 3, as for the trained model; measured with PyTorch on generate_corpus(872, 0).
HEAD_GAIN = {False: 2.2, True: 40.0}


def default_config(quick: bool = False) -> DistilBertConfig:
    """BASE (the SST-2 model), or for --quick a TINY-sized one over the embedded vocabulary."""
    if not quick:
        return BASE
    return TINY.replace(vocab_size=vocab.VOCAB_SIZE, max_position_embeddings=vocab.MODEL_MAX_LENGTH)


def cache_root() -> Path:
    """Where default models are kept: $FLAXSENT_BENCH_CACHE, else ~/.cache/flaxsent."""
    env = os.environ.get("FLAXSENT_BENCH_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "flaxsent"


def _fingerprint(cfg: DistilBertConfig, gain: float) -> tuple[str, dict]:
    import torch
    import transformers
    recipe = {
        "config": cfg.to_hf_dict(),
        "seed": SEED,
        "init": f"transformers.DistilBertForSequenceClassification(cfg), then every parameter "
                f"redrawn with torch.Generator().manual_seed(seed): N(0, {INIT_STD}^2), LayerNorm "
                f"scales 1 + N(0, 0.1^2), classifier layer x {gain}",
        "torch": torch.__version__.split("+")[0],
        "transformers": transformers.__version__,
        "vocab_sha256": hashlib.sha256("\n".join(vocab.build_vocab()).encode()).hexdigest(),
        "layout": _LAYOUT,
    }
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    return digest, recipe


def default_model_folder(quick: bool = False, root: str | os.PathLike | None = None) -> Path:
    """The cached HF folder of the default model, built on first use (a few seconds)."""
    cfg = default_config(quick)
    gain = HEAD_GAIN[quick]
    digest, recipe = _fingerprint(cfg, gain)
    base = Path(root).expanduser() if root else cache_root()
    folder = base / f"bench-{'tiny' if quick else 'default'}-{digest}"
    if (folder / MARKER).is_file():
        return folder
    # built beside the folder and moved in whole (flaxsent.io.durable); a folder without the
    # marker (an older layout's interrupted build) is replaced
    try:
        with durable.atomic_output_dir(folder, force=True) as tmp:
            _build(cfg, gain, tmp)
            (tmp / MARKER).write_text(json.dumps({"weights": "random", **recipe}, indent=2)
                                      + "\n")
    except WriteError:
        if not (folder / MARKER).is_file():  # else another process finished first: its copy
            raise
    return folder


def _redraw(model, gain: float) -> None:
    """Every parameter from a seeded generator (see INIT_STD); the classifier layer times `gain`."""
    import torch
    gen = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith(("layer_norm.weight", "LayerNorm.weight")):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(noise * INIT_STD * (gain if name.startswith("classifier.") else 1.0))


def _build(cfg: DistilBertConfig, gain: float, folder: Path) -> None:
    """Save the seeded random PyTorch model and the embedded tokenizer files into `folder`."""
    import transformers
    from transformers.utils import logging as hf_logging

    model = transformers.DistilBertForSequenceClassification(
        transformers.DistilBertConfig(**cfg.to_hf_dict())).eval()
    _redraw(model, gain)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(folder)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    vocab.write_tokenizer_files(folder)
