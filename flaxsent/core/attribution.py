"""Which tokens moved a score: integrated gradients over the word embeddings, compiled and packed.

Integrated gradients (Sundararajan et al. 2017) of a text's target logit with respect to its
word embeddings, positions unchanged: the baseline is the same sequence with every token but the
first and last ([CLS], [SEP]) replaced by [PAD], as transformers-interpret builds it. The path
integral is taken by Gauss-Legendre quadrature with `steps` points, exactly captum's default
('gausslegendre'), so the numbers compare with `LayerIntegratedGradients`. `gradient-x-input` is
one gradient at the input times the input's word vectors (captum's `LayerGradientXActivation`).

Every interpolation point of every text is one packed copy of that text: the shape plan packs the
copies of many texts into its few shapes, and one jitted program per shape returns, per token,
the gradient (weighted by the quadrature) dotted with (input - baseline). Copies never interact
(attention stays inside each text), so one `jax.grad` of the batch's weighted sum gives every
copy's own gradient.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flaxsent.core.engine import DeviceProgram, place
from flaxsent.core.model import DistilBertForSequenceClassification
from flaxsent.core.plan import Batch, ShapePlan

METHODS = ("integrated-gradients", "gradient-x-input")
_IN_FLIGHT = 2  # batches dispatched ahead of the one being read back


def quadrature(method: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Points alpha in [0, 1] and their weights [K]: captum's Gauss-Legendre rule (numpy's
    `leggauss` moved from [-1, 1] to [0, 1]); one point at the input for gradient-x-input."""
    if method == "gradient-x-input":
        return np.ones(1), np.ones(1)
    x, w = np.polynomial.legendre.leggauss(steps)
    return 0.5 * (1 + x), 0.5 * w


def baseline_ids(ids: Sequence[int], pad_id: int) -> np.ndarray:
    """The baseline of a text: its first and last tokens ([CLS], [SEP]) kept, [PAD] between."""
    base = np.full(len(ids), pad_id, np.int32)  # [n]
    base[0], base[-1] = ids[0], ids[-1]
    return base


@dataclasses.dataclass
class StepBatch:
    """One batch of the plan whose texts are interpolation copies, and what each copy needs."""

    batch: Batch  # the copies' layout (ids are the inputs')
    base_ids: np.ndarray  # [B, L] int32: the baseline's ids under each copy
    base_scale: np.ndarray  # [B, L] float32: 1 (integrated gradients) or 0 (a zero baseline)
    alpha: np.ndarray  # [B, L] float32: the copy's point on the path, on its tokens
    weight: np.ndarray  # [B, S] float32: the copy's quadrature weight (0 in empty slots)
    target: np.ndarray  # [B, S] int32: the label whose logit is differentiated
    texts: np.ndarray  # [n] int64: the text of each real copy (in `batch.positions` order)

    def arrays(self) -> tuple[np.ndarray, ...]:
        """What the program takes, in its order."""
        b = self.batch
        return (b.input_ids, self.base_ids, self.base_scale, self.alpha, b.segment_ids,
                b.position_ids, b.cls_index, self.weight, self.target)


def step_batches(plan: ShapePlan, ids: Sequence[Sequence[int]], targets: Sequence[int],
                 method: str, steps: int, pad_id: int, window: int = 4096,
                 ) -> Iterator[StepBatch]:
    """The plan's batches of every text's interpolation copies (`steps` copies a text for
    integrated gradients, one for gradient-x-input), each copy laid out with its path point."""
    alphas, weights = quadrature(method, steps)
    k = len(alphas)
    bases = [baseline_ids(t, pad_id) for t in ids]
    scale = 1.0 if method == "integrated-gradients" else 0.0
    copies = ((i * k + j, ids[i]) for i in range(len(ids)) for j in range(k))
    for batch in plan.batches(copies, pad_id, window):
        b, length, s = batch.shape.as_tuple()
        base = np.full((b, length), pad_id, np.int32)
        base_scale = np.zeros((b, length), np.float32)
        alpha = np.zeros((b, length), np.float32)
        weight = np.zeros((b, s), np.float32)
        target = np.zeros((b, s), np.int32)
        texts, points = np.divmod(batch.positions, k)
        for text, point, slot in zip(texts.tolist(), points.tolist(), batch.slots.tolist(),
                                     strict=True):
            r, c = divmod(slot, s)
            start = batch.cls_index[r, c]
            end = start + len(bases[text])
            base[r, start:end] = bases[text]
            base_scale[r, start:end] = scale
            alpha[r, start:end] = alphas[point]
            weight[r, c] = weights[point]
            target[r, c] = targets[text]
        yield StepBatch(batch, base, base_scale, alpha, weight, target, texts)


class AttributionEngine(DeviceProgram):
    """Per-token attributions of packed interpolation copies, jitted once per shape over the
    ('data',) mesh (params replicated, batch sharded), like the forward's `Engine`."""

    def __init__(self, model: DistilBertForSequenceClassification, *,
                 devices: int | Sequence[jax.Device] | None = None,
                 precision: str = "highest"):
        super().__init__(model, devices, precision)
        self.mesh, replicated, batch_sharding = self.mesh_shardings()
        graphdef, state = nnx.split(model)
        self._state = place(state, replicated)

        def token_attributions(state, input_ids, base_ids, base_scale, alpha, segment_ids,
                               position_ids, cls_index, weight, target):
            self._traced.append((*input_ids.shape, cls_index.shape[1]))  # at trace time only
            model = nnx.merge(graphdef, state)
            table = model.embeddings.word_embeddings
            inputs = table(input_ids)  # [B, L, D]
            delta = inputs - table(base_ids) * base_scale[..., None].astype(inputs.dtype)

            def objective(words):  # the quadrature's weighted sum of every copy's target logit
                logits = model.packed_logits_from_words(words, segment_ids, position_ids,
                                                        cls_index)  # [B, S, C]
                chosen = jnp.take_along_axis(logits, target[..., None], axis=-1)[..., 0]
                return jnp.sum(weight * chosen)

            path = (inputs - delta) + alpha[..., None].astype(inputs.dtype) * delta  # [B, L, D]
            grad = jax.grad(objective)(path)  # [B, L, D]
            return jnp.sum((grad * delta).astype(jnp.float32), axis=-1)  # [B, L]

        self._jitted = jax.jit(token_attributions,
                               in_shardings=(replicated, *[batch_sharding] * 9),
                               out_shardings=batch_sharding)
        self._batch = batch_sharding

    @property
    def n_compilations(self) -> int:
        """Executables in the jit cache: len(compiled_shapes) unless something recompiled."""
        return self._jitted._cache_size()

    def run(self, step: StepBatch) -> jax.Array:
        """Dispatch one batch; per-token attributions [B, L] (asynchronously)."""
        self._check_rows(step.batch.shape.rows)
        placed = [jax.device_put(a, self._batch) for a in step.arrays()]
        with jax.default_matmul_precision(self.precision):
            return self._jitted(self._state, *placed)


def attribute(engine: AttributionEngine, plan: ShapePlan, ids: Sequence[Sequence[int]],
              targets: Sequence[int], method: str, steps: int, pad_id: int,
              progress: Callable[[int], object] | None = None) -> list[np.ndarray]:
    """Each text's per-token attributions [n] (float64): its copies' contributions summed.
    Two batches stay in flight while the host lays out the next; `progress(n)` hears of each
    batch's n copies once they are read back."""
    totals = [np.zeros(len(t)) for t in ids]
    in_flight: collections.deque = collections.deque()

    def read(item: tuple[StepBatch, jax.Array]) -> None:
        step, out = item
        rows = np.asarray(out, np.float64)  # [B, L]
        s = step.batch.shape.slots
        for text, slot in zip(step.texts.tolist(), step.batch.slots.tolist(), strict=True):
            r, c = divmod(slot, s)
            start = step.batch.cls_index[r, c]
            totals[text] += rows[r, start:start + len(totals[text])]
        if progress is not None:
            progress(step.batch.n_real)

    for step in step_batches(plan, ids, targets, method, steps, pad_id):
        in_flight.append((step, engine.run(step)))
        if len(in_flight) > _IN_FLIGHT:
            read(in_flight.popleft())
    while in_flight:
        read(in_flight.popleft())
    return totals


def words_of(tokens: Sequence[str], attributions: np.ndarray) -> tuple[list[str], np.ndarray]:
    """WordPieces grouped into words ('##' continues the word before), attributions summed;
    the first and last tokens ([CLS], [SEP], which keep their baseline) are left out."""
    words: list[str] = []
    sums: list[float] = []
    for token, value in zip(tokens[1:-1], attributions[1:-1], strict=True):
        if token.startswith("##") and words:
            words[-1] += token[2:]
            sums[-1] += float(value)
        else:
            words.append(token)
            sums.append(float(value))
    return words, np.asarray(sums)


@dataclasses.dataclass(frozen=True)
class Explanation:
    """Why one text got its score: per-token and per-word attributions to one label's logit."""

    text: str
    tokens: tuple[str, ...]  # WordPieces, [CLS] and [SEP] included
    attributions: np.ndarray  # [n] per token (0 for [CLS] and [SEP]: they keep their baseline)
    words: tuple[str, ...]
    word_attributions: np.ndarray  # [W] summed over each word's pieces
    target: str  # the label explained
    predicted: str  # the model's label for the text
    probability: float  # P(target) at the text
    delta: float  # the target's logit at the text minus at the baseline
    gap: float | None  # (sum - delta) / |delta| (sum - delta if delta is 0); None: gradient-x-input
    method: str
    steps: int

    def top(self, k: int) -> list[tuple[str, float]]:
        """The `k` words with the largest |attribution|, largest first."""
        order = np.argsort(-np.abs(self.word_attributions), kind="stable")[:k]
        return [(self.words[i], float(self.word_attributions[i])) for i in order]
