"""The declarative PyTorch <-> Flax parameter table: every tensor mapped exactly once."""

from __future__ import annotations

import dataclasses
from typing import Literal

from flaxsent.core.config import DistilBertConfig

Transform = Literal["identity", "transpose"]

ENCODER_PREFIX = "distilbert."
HEAD_TORCH_KEYS = ("pre_classifier.weight", "pre_classifier.bias",
                   "classifier.weight", "classifier.bias")
# DistilBertForMaskedLM's head: present in base checkpoints, useless to a classifier.
MLM_HEAD_TORCH_KEYS = ("vocab_transform.weight", "vocab_transform.bias",
                       "vocab_layer_norm.weight", "vocab_layer_norm.bias",
                       "vocab_projector.weight", "vocab_projector.bias")
# Old checkpoints name LayerNorm parameters gamma/beta.
LEGACY_SUFFIXES = {".gamma": ".weight", ".beta": ".bias"}


@dataclasses.dataclass(frozen=True)
class Entry:
    """One tensor: its PyTorch key, its Flax path ('/'-joined), and how the array changes."""

    torch_key: str
    flax_path: str
    transform: Transform
    torch_shape: tuple[int, ...]

    @property
    def flax_shape(self) -> tuple[int, ...]:
        return self.torch_shape[::-1] if self.transform == "transpose" else self.torch_shape


def _linear(torch_name: str, flax_name: str, n_in: int, n_out: int) -> list[Entry]:
    # torch stores [out, in]; Flax kernels are [in, out].
    return [Entry(f"{torch_name}.weight", f"{flax_name}/kernel", "transpose", (n_out, n_in)),
            Entry(f"{torch_name}.bias", f"{flax_name}/bias", "identity", (n_out,))]


def _layer_norm(torch_name: str, flax_name: str, dim: int) -> list[Entry]:
    return [Entry(f"{torch_name}.weight", f"{flax_name}/scale", "identity", (dim,)),
            Entry(f"{torch_name}.bias", f"{flax_name}/bias", "identity", (dim,))]


def parameter_table(cfg: DistilBertConfig) -> list[Entry]:
    """Every parameter of a DistilBertForSequenceClassification of this config."""
    d, f = cfg.dim, cfg.hidden_dim
    emb, enc = f"{ENCODER_PREFIX}embeddings", f"{ENCODER_PREFIX}transformer.layer"
    table = [
        Entry(f"{emb}.word_embeddings.weight", "embeddings/word_embeddings/embedding",
              "identity", (cfg.vocab_size, d)),
        Entry(f"{emb}.position_embeddings.weight", "embeddings/position_embeddings/embedding",
              "identity", (cfg.max_position_embeddings, d)),
        *_layer_norm(f"{emb}.LayerNorm", "embeddings/layer_norm", d),
    ]
    for i in range(cfg.n_layers):
        t, x = f"{enc}.{i}", f"layers/{i}"
        for lin in ("q_lin", "k_lin", "v_lin", "out_lin"):
            table += _linear(f"{t}.attention.{lin}", f"{x}/attention/{lin}", d, d)
        table += _layer_norm(f"{t}.sa_layer_norm", f"{x}/sa_layer_norm", d)
        table += _linear(f"{t}.ffn.lin1", f"{x}/ffn/lin1", d, f)
        table += _linear(f"{t}.ffn.lin2", f"{x}/ffn/lin2", f, d)
        table += _layer_norm(f"{t}.output_layer_norm", f"{x}/output_layer_norm", d)
    table += _linear("pre_classifier", "pre_classifier", d, d)
    table += _linear("classifier", "classifier", d, cfg.num_labels)
    return table


def is_head(entry: Entry) -> bool:
    """Whether the entry belongs to the classification head (absent in base checkpoints)."""
    return entry.torch_key in HEAD_TORCH_KEYS


def canonical_torch_key(key: str) -> str:
    """A checkpoint key in today's spelling: legacy gamma/beta renamed, a missing prefix added."""
    for old, new in LEGACY_SUFFIXES.items():
        if key.endswith(old):
            key = key[: -len(old)] + new
            break
    # A bare DistilBertModel checkpoint has no 'distilbert.' prefix.
    if key.startswith(("embeddings.", "transformer.")):
        key = ENCODER_PREFIX + key
    return key
