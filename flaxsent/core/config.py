"""The DistilBERT architecture as one frozen dataclass, read strictly from an HF config.json."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

from flaxsent.errors import ConfigError

# Keys that define the network: missing ones are errors.
_REQUIRED = ("vocab_size", "dim", "n_layers", "n_heads", "hidden_dim", "max_position_embeddings")

# Dropout rates: read (training uses them) and written back (transformers always writes them).
_DROPOUTS = ("dropout", "attention_dropout", "seq_classif_dropout")
# Keys with no effect on flaxsent (training bookkeeping and settings written by transformers):
# kept verbatim so `to_hf_dict` round-trips, never interpreted.
_PASSTHROUGH = frozenset({
    "architectures", "qa_dropout",
    "initializer_range", "finetuning_task", "output_past", "tie_weights_", "tie_word_embeddings",
    "transformers_version", "dtype", "torch_dtype", "bos_token_id", "eos_token_id",
    "problem_type", "_name_or_path", "output_hidden_states", "output_attentions",
    "return_dict", "use_return_dict", "is_encoder_decoder", "is_decoder", "add_cross_attention",
    "chunk_size_feed_forward", "pruned_heads", "torchscript", "use_bfloat16", "tf_padding",
    "prefix", "sep_token_id", "decoder_start_token_id", "task_specific_params",
    "tokenizer_class", "cross_attention_hidden_size", "tie_encoder_decoder", "_attn_implementation",
    "_attn_implementation_autoset", "max_length", "min_length", "num_beams", "temperature",
    "top_k", "top_p", "repetition_penalty", "length_penalty", "no_repeat_ngram_size",
    "early_stopping", "do_sample", "bad_words_ids", "num_return_sequences", "diversity_penalty",
    "num_beam_groups", "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values",
    "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens",
    "encoder_no_repeat_ngram_size", "output_scores", "return_dict_in_generate",
    "typical_p", "model_name", "name_or_path",
})
_LABEL_KEYS = frozenset({"id2label", "label2id", "num_labels", "_num_labels"})
_INTERPRETED = frozenset({*_REQUIRED, *_DROPOUTS, "model_type", "activation",
                          "sinusoidal_pos_embds", "pad_token_id", "layer_norm_eps"})
_ACTIVATIONS = ("gelu", "relu")


@dataclasses.dataclass(frozen=True)
class DistilBertConfig:
    """Every number that shapes a DistilBERT classifier; nothing else."""

    vocab_size: int = 30522
    dim: int = 768
    n_layers: int = 6
    n_heads: int = 12
    hidden_dim: int = 3072
    max_position_embeddings: int = 512
    sinusoidal_pos_embds: bool = False
    activation: str = "gelu"
    pad_token_id: int = 0
    labels: tuple[str, ...] = ("LABEL_0", "LABEL_1")
    layer_norm_eps: float = 1e-12
    # Training only (HF's defaults): embeddings and FFN outputs, attention weights, the head.
    dropout: float = 0.1
    attention_dropout: float = 0.1
    seq_classif_dropout: float = 0.2
    # Inert HF keys (architectures, ...), kept for a faithful `to_hf_dict`.
    passthrough: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for name in _REQUIRED:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"config field '{name}' must be a positive integer, got {value!r}")
        if self.dim % self.n_heads:
            raise ConfigError(f"dim ({self.dim}) must be divisible by n_heads ({self.n_heads})")
        if self.activation not in _ACTIVATIONS:
            raise ConfigError(
                f"activation {self.activation!r} is not supported (expected one of {_ACTIVATIONS})")
        if not self.labels:
            raise ConfigError("a classifier needs at least one label")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(f"pad_token_id {self.pad_token_id} is outside the vocabulary")
        for name in _DROPOUTS:
            rate = getattr(self, name)
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
                raise ConfigError(f"config field '{name}' must be a rate in [0, 1), got {rate!r}")

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def replace(self, **changes: Any) -> DistilBertConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_hf_dict(cls, hf: Mapping[str, Any]) -> DistilBertConfig:
        """Read an HF DistilBERT config dict; other architectures, missing or unknown keys fail."""
        if not isinstance(hf, Mapping):
            raise ConfigError(f"config must be a JSON object, got {type(hf).__name__}")
        model_type = hf.get("model_type")
        if model_type != "distilbert":
            raise ConfigError(
                f"model_type is {model_type!r}, not 'distilbert': flaxsent runs DistilBERT "
                "checkpoints only")
        missing = [k for k in _REQUIRED if k not in hf]
        if missing:
            raise ConfigError(f"config.json lacks required field(s): {', '.join(missing)}")
        unknown = sorted(set(hf) - _PASSTHROUGH - _LABEL_KEYS - _INTERPRETED)
        if unknown:
            raise ConfigError(f"config.json has unknown field(s): {', '.join(unknown)} "
                              "(a typo, or not a DistilBERT config?)")
        return cls(
            **{k: hf[k] for k in _REQUIRED},
            sinusoidal_pos_embds=bool(hf.get("sinusoidal_pos_embds", False)),
            activation=hf.get("activation", "gelu"),
            pad_token_id=0 if hf.get("pad_token_id") is None else int(hf["pad_token_id"]),
            labels=_labels_from_hf(hf),
            layer_norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
            **{k: hf[k] for k in _DROPOUTS if k in hf},
            passthrough={k: hf[k] for k in hf if k in _PASSTHROUGH},
        )

    def to_hf_dict(self) -> dict[str, Any]:
        """The HF config.json dict (transformers' DistilBertConfig accepts it)."""
        out: dict[str, Any] = dict(self.passthrough)
        out.update({k: getattr(self, k) for k in _REQUIRED})
        out.update(
            model_type="distilbert",
            activation=self.activation,
            sinusoidal_pos_embds=self.sinusoidal_pos_embds,
            pad_token_id=self.pad_token_id,
            id2label={str(i): label for i, label in enumerate(self.labels)},
            label2id={label: i for i, label in enumerate(self.labels)},
        )
        if self.layer_norm_eps != 1e-12:
            out["layer_norm_eps"] = self.layer_norm_eps
        out.update({k: getattr(self, k) for k in _DROPOUTS})
        out.setdefault("architectures", ["DistilBertForSequenceClassification"])
        return dict(sorted(out.items()))

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> DistilBertConfig:
        """Read config.json, turning unreadable JSON into a ConfigError naming the file."""
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        try:
            return cls.from_hf_dict(data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    def save_json(self, path: str | os.PathLike) -> None:
        """Write the HF config.json."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_hf_dict(), f, indent=2)
            f.write("\n")


def _labels_from_hf(hf: Mapping[str, Any]) -> tuple[str, ...]:
    """Labels ordered by id, from id2label (or LABEL_i names for num_labels, HF's default 2)."""
    id2label = hf.get("id2label")
    if id2label:
        try:
            by_id = {int(k): str(v) for k, v in id2label.items()}
        except (AttributeError, TypeError, ValueError):
            raise ConfigError(f"id2label must map integer ids to names, got {id2label!r}") from None
        if sorted(by_id) != list(range(len(by_id))):
            raise ConfigError(f"id2label ids must be 0..{len(by_id) - 1}, got {sorted(by_id)}")
        return tuple(by_id[i] for i in range(len(by_id)))
    n = hf.get("num_labels", hf.get("_num_labels", 2))
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"num_labels must be a positive integer, got {n!r}")
    return tuple(f"LABEL_{i}" for i in range(n))


# The SST-2 model: distilbert-base-uncased-finetuned-sst-2-english.
BASE = DistilBertConfig(labels=("NEGATIVE", "POSITIVE"))
# A few-kilobyte model for tests: odd FFN width catches transposition slips.
TINY = DistilBertConfig(vocab_size=128, dim=32, n_layers=2, n_heads=4, hidden_dim=37,
                        max_position_embeddings=64, labels=("NEGATIVE", "POSITIVE"))
