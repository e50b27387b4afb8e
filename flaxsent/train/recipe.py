"""The model card's training recipe, written once, and the options of a training run.

`CARD` holds the recipe's numbers (distilbert-base-uncased-finetuned-sst-2-english: learning rate
1e-5, batch 32, 600 warm-up steps, 3 epochs, 128 tokens; AdamW and clipping as transformers'
Trainer). `Recipe` (the optimiser: schedule and AdamW) and `TrainOptions` (everything `flaxsent
train` takes) take their defaults from it, and the command line takes its defaults from those.

This module stays light (no jax or optax until a schedule or optimizer is built): the command
line imports it to build its parser.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from flaxsent.errors import TrainError

if TYPE_CHECKING:
    import optax

# seeds are integers from 0 to 2**32 - 1, as numpy's: numpy (the data order) refuses a negative
# seed, and JAX (dropout) folds one onto another (key(-1) is key(2**32 - 1)) or overflows
SEED_LIMIT = 2**32
Params = dict[str, Any]  # nnx.to_pure_dict of the model's parameters (nested dicts of arrays)


@dataclasses.dataclass(frozen=True)
class CardRecipe:
    """The model card's fine-tuning recipe; where the card is silent, transformers' Trainer's."""

    learning_rate: float = 1e-5  # the peak of the schedule
    batch_size: int = 32  # examples per optimizer step
    warmup_steps: int = 600  # linear warm-up from 0, then linear decay to 0
    epochs: int = 3
    max_length: int = 128  # tokens per example
    weight_decay: float = 0.0  # AdamW's, never on biases or LayerNorm parameters
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8
    max_grad_norm: float | None = 1.0  # clip the gradient's global norm; None turns it off


CARD = CardRecipe()


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The optimisation recipe; the defaults are the model card's (transformers' Trainer)."""

    learning_rate: float = CARD.learning_rate
    warmup_steps: int = CARD.warmup_steps
    total_steps: int = 1  # optimizer updates in the run: the schedule decays to 0 at the last
    weight_decay: float = CARD.weight_decay  # never on biases or LayerNorm parameters
    beta1: float = CARD.beta1
    beta2: float = CARD.beta2
    epsilon: float = CARD.epsilon
    max_grad_norm: float | None = CARD.max_grad_norm  # None turns clipping off
    grad_accum: int = 1  # micro-batches per optimizer update

    def schedule(self) -> optax.Schedule:
        """Linear warm-up from 0 to the peak, then linear decay to 0 at `total_steps`."""
        import optax
        warmup = min(self.warmup_steps, self.total_steps)
        return optax.join_schedules(
            [optax.linear_schedule(0.0, self.learning_rate, max(warmup, 1)),
             optax.linear_schedule(self.learning_rate, 0.0, max(self.total_steps - warmup, 1))],
            [warmup])

    def optimizer(self) -> optax.GradientTransformation:
        """Clip, then AdamW with the schedule and the decay mask; accumulated over micro-batches."""
        import optax
        adamw = optax.adamw(self.schedule(), b1=self.beta1, b2=self.beta2, eps=self.epsilon,
                            weight_decay=self.weight_decay, mask=decay_mask)
        tx = adamw if self.max_grad_norm is None else \
            optax.chain(optax.clip_by_global_norm(self.max_grad_norm), adamw)
        return optax.MultiSteps(tx, every_k_schedule=self.grad_accum) if self.grad_accum > 1 \
            else tx


def decay_mask(params: Params) -> Params:
    """True where weight decay applies: every weight but biases and LayerNorm parameters."""
    import jax

    def decays(path: Sequence[Any], _: Any) -> bool:
        names = [str(getattr(k, "key", k)) for k in path]
        return names[-1] != "bias" and not any("layer_norm" in n for n in names)
    return jax.tree_util.tree_map_with_path(decays, params)


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """Everything `flaxsent train` takes; the recipe's defaults are the model card's (`CARD`)."""

    model: str
    data: str
    out: str
    eval: str | None = None
    num_labels: int | None = None  # a fresh head of N labels on a checkpoint without one
    label_names: tuple[str, ...] | None = None  # names for the output's labels
    text_column: str | None = None
    label_column: str = "label"
    learning_rate: float = CARD.learning_rate
    batch_size: int = CARD.batch_size  # examples per optimizer step
    warmup_steps: int = CARD.warmup_steps
    epochs: int = CARD.epochs
    max_steps: int | None = None  # stop after N steps; then also the schedule's length
    max_length: int = CARD.max_length
    weight_decay: float = CARD.weight_decay
    max_grad_norm: float | None = CARD.max_grad_norm
    seed: int = 0
    grad_accum: int = 1  # micro-batches per step (batch_size // grad_accum examples each)
    dtype: str = "float32"  # compute; master weights stay float32
    dropout: bool = True
    shuffle: bool = True
    packed: bool = True  # False: one example a row, padded to max_length (for comparison)
    save_every: int = 500
    devices: int | None = None
    resume: bool = False
    force: bool = False
    progress: bool = True
    tensorboard: bool = False

    def check(self) -> None:
        """One-line errors for values no run can use, before any work: every number in its
        range (nan and inf refused), every label name given."""
        for name, low in (("batch_size", 1), ("epochs", 1), ("max_length", 3),
                          ("grad_accum", 1), ("save_every", 1), ("warmup_steps", 0)):
            _integer(name, getattr(self, name), low)
        _integer("seed", self.seed, 0, SEED_LIMIT - 1)
        for name, low in (("max_steps", 1), ("devices", 1), ("num_labels", 2)):
            if getattr(self, name) is not None:
                _integer(name, getattr(self, name), low)
        _number("learning_rate", self.learning_rate, "a finite positive number",
                lambda x: x > 0)
        _number("weight_decay", self.weight_decay, "a finite number, 0 or more",
                lambda x: x >= 0)
        if self.max_grad_norm is not None:
            _number("max_grad_norm", self.max_grad_norm,
                    "a finite positive number (0 on the command line, None in TrainOptions, turns "
                    "clipping off)", lambda x: x > 0)
        if self.batch_size % self.grad_accum:
            raise TrainError(f"--batch-size {self.batch_size} does not split into "
                             f"--grad-accum {self.grad_accum} equal micro-batches")
        if self.dtype not in ("float32", "bfloat16"):
            raise TrainError(f"--dtype {self.dtype!r}: choose float32 or bfloat16")
        if self.label_names is not None and (
                not all(n.strip() for n in self.label_names)
                or len(set(self.label_names)) != len(self.label_names)):
            raise TrainError(f"--label-names {','.join(self.label_names)}: give each label a "
                             "distinct, non-empty name")

    def depends_on(self) -> dict[str, Any]:
        """The options that change what a run computes (recorded for --resume)."""
        skip = {"out", "resume", "force", "progress", "save_every", "tensorboard", "model",
                "data", "eval"}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _integer(name: str, value: Any, low: int, high: int | None = None) -> None:
    """A TrainError unless `value` is an integer from `low` (to `high`)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (
            high is not None and value > high):
        wanted = (f"an integer from {low} to {high}" if high is not None
                  else "a positive integer" if low == 1 else f"an integer, {low} or more")
        raise TrainError(f"{_flag(name)} {value!r}: must be {wanted}")


def _number(name: str, value: Any, wanted: str, ok: Callable[[float], bool]) -> None:
    """A TrainError unless `value` is a finite number for which `ok` holds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or not ok(value):
        raise TrainError(f"{_flag(name)} {value!r}: must be {wanted}")
