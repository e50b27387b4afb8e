"""Shared fixtures: HF DistilBERT checkpoints built locally with random weights (no downloads)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the network in tests
# Tests run on the CPU (never a GPU), and with the tpu-aot extra installed, jax would otherwise
# probe for a TPU at start-up and print libtpu's errors; compiling for TPU topologies still works.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

FIXTURES = Path(__file__).parent / "fixtures"
TINY_HF = dict(vocab_size=128, dim=32, n_layers=2, n_heads=4, hidden_dim=37,
               max_position_embeddings=64, id2label={0: "NEGATIVE", 1: "POSITIVE"},
               label2id={"NEGATIVE": 0, "POSITIVE": 1})
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ("the a an is was it this that movie film story plot actor acting great good bad "
         "awful boring fun funny dull brilliant not n't no very too so and but or of to in "
         "for with on at by from i you he she we they my your his her our their one two "
         "best worst love hate like enjoyed fails works").split()


def write_vocab(folder: Path, vocab_size: int) -> list[str]:
    """A BERT-uncased-style vocab.txt of exactly vocab_size entries ([PAD] = 0)."""
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-")
    tokens = SPECIALS + WORDS + chars + ["##" + c for c in chars]
    tokens += [f"[unused{i}]" for i in range(vocab_size - len(tokens))]
    tokens = tokens[:vocab_size]
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"model_max_length": 512, "do_lower_case": True}))
    return tokens


def randomize(model, seed: int, scale: float = 0.1) -> None:
    """Non-trivial weights everywhere (LayerNorm scales and biases too) to catch mapping slips.

    `scale` is the weights' standard deviation: 0.1 makes tiny models' logits O(1); full-size
    models use 0.02 (HF's initializer_range), or their logits grow far beyond a trained model's.
    """
    import torch
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "position_embeddings" in name and model.config.sinusoidal_pos_embds:
                continue
            noise = torch.randn(p.shape, generator=gen) * scale
            is_scale = name.endswith("norm.weight") or "LayerNorm.weight" in name
            p.copy_(noise * (0.1 / scale) + 1.0 if is_scale else noise)


def build_hf_checkpoint(folder: Path, *, fmt: str = "safetensors", seed: int = 0,
                        head: str = "classifier", vocab: bool = True, scale: float = 0.1,
                        **overrides):
    """Save a random HF DistilBERT (classifier, masked-LM or bare) to `folder`; return the model."""
    import torch
    import transformers as tf

    kwargs = {**TINY_HF, **overrides}
    cfg = tf.DistilBertConfig(**kwargs)
    torch.manual_seed(seed)
    cls = {"classifier": tf.DistilBertForSequenceClassification,
           "mlm": tf.DistilBertForMaskedLM, "bare": tf.DistilBertModel}[head]
    model = cls(cfg).eval()
    randomize(model, seed, scale)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=(fmt == "safetensors"))
    if fmt == "bin" and not (folder / "pytorch_model.bin").exists():
        # transformers 5 always writes safetensors: write the legacy .bin ourselves.
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
        (folder / "model.safetensors").unlink(missing_ok=True)
    if vocab:
        write_vocab(folder, kwargs["vocab_size"])
    return model


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory) -> Path:
    """A tiny random HF classifier folder (safetensors, vocab.txt, tokenizer_config.json)."""
    folder = tmp_path_factory.mktemp("tiny_hf")
    build_hf_checkpoint(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_flax(tiny_hf, tmp_path_factory) -> Path:
    """The tiny checkpoint converted to a flaxsent folder."""
    from flaxsent.convert.torch_to_flax import convert_checkpoint
    dst = tmp_path_factory.mktemp("tiny_flax") / "model"
    convert_checkpoint(tiny_hf, dst)
    return dst


def random_batch(rng: np.random.Generator, vocab: int, batch: int, length: int,
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Random ids [B, L] with random right padding; row 0 is padded down to [CLS] alone."""
    ids = rng.integers(1, vocab, (batch, length)).astype(np.int64)
    lengths = rng.integers(1, length + 1, batch)
    lengths[0] = 1
    lengths[-1] = length
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)
    ids[mask == 0] = 0
    return ids, mask
