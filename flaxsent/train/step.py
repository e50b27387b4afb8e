"""The compiled training step: optax's AdamW on packed batches, data-parallel over a mesh.

The loss is the mean cross-entropy over a batch's examples, whether they are packed several to a
row or padded one to a row (empty slots carry the label -1 and count for nothing), so a packed
step computes the same gradients as the examples alone. The step is one pure function of
(params, optimizer state, batch, key), jitted once per shape of the `StepPlan`, with params and
optimizer state replicated (`P()`) and the batch sharded over the `('data',)` mesh, as the
inference engine does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from flaxsent.core.engine import DeviceProgram, batch_specs
from flaxsent.core.model import DistilBertForSequenceClassification
from flaxsent.core.plan import Batch, Shape
from flaxsent.train.recipe import Params, Recipe

NO_LABEL = -1  # the label of an empty slot


def labels_of(batch: Batch, labels: np.ndarray) -> np.ndarray:
    """The label of every slot [B, S] (NO_LABEL where no example sits) for a batch."""
    b, _, s = batch.shape.as_tuple()
    out = np.full(b * s, NO_LABEL, np.int32)
    out[batch.slots] = labels
    return out.reshape(b, s)


def loss_fn(model: DistilBertForSequenceClassification, batch_arrays: Sequence[jax.Array],
            slot_labels: jax.Array, dropout_key: jax.Array | None) -> jax.Array:
    """Mean cross-entropy over the batch's examples (slots with a label)."""
    logits = model.packed_logits(*batch_arrays, dropout_key=dropout_key)  # [B, S, C]
    real = slot_labels != NO_LABEL  # [B, S]
    ce = optax.softmax_cross_entropy_with_integer_labels(
        logits, jnp.where(real, slot_labels, 0))  # [B, S]
    return jnp.sum(jnp.where(real, ce, 0.0)) / jnp.maximum(real.sum(), 1)


class TrainStep(DeviceProgram):
    """params, optimizer state -> one update on a batch; compiled once per batch shape."""

    def __init__(self, model: DistilBertForSequenceClassification, recipe: Recipe, *,
                 devices: int | Sequence[jax.Device] | None = None, dropout: bool = True,
                 precision: str = "highest"):
        super().__init__(model, devices, precision)
        self.mesh, self.replicated, self.batch_sharding = self.mesh_shardings()
        self.recipe = recipe
        self.tx = recipe.optimizer()
        self.graphdef, state = nnx.split(model)
        # shapes and dtypes of the params, to lower a step without them (ahead of time)
        self.abstract_state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                                           state)
        graphdef = self.graphdef
        use_dropout = dropout

        def step(params, opt_state, input_ids, segment_ids, position_ids, cls_index, labels,
                 key):
            self._traced.append((*input_ids.shape, cls_index.shape[1]))  # at trace time only

            def loss_of(p):
                model = nnx.merge(graphdef, nnx.State(p))
                return loss_fn(model, (input_ids, segment_ids, position_ids, cls_index), labels,
                               key if use_dropout else None)

            loss, grads = jax.value_and_grad(loss_of)(params)
            updates, opt_state = self.tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss, optax.tree.norm(grads)

        rep, shard = self.replicated, self.batch_sharding
        self._step = jax.jit(step, in_shardings=(rep, rep, *[shard] * 5, rep),
                             out_shardings=(rep, rep, rep, rep), donate_argnums=(0, 1))

    def init(self, model: DistilBertForSequenceClassification) -> tuple[Params, Any]:
        """The model's params as a pure dict and a fresh optimizer state, both replicated."""
        params = jax.device_put(nnx.to_pure_dict(nnx.state(model)), self.replicated)
        return params, jax.device_put(self.tx.init(params), self.replicated)

    def __call__(self, params: Params, opt_state: Any, batch: Batch, labels: np.ndarray,
                 key: jax.Array) -> tuple[Params, Any, jax.Array, jax.Array]:
        """One micro-batch: (new params, new optimizer state, its mean loss, the gradient's
        global norm before clipping). Donates the old params and state."""
        self._check_rows(batch.shape.rows)
        arrays = [jax.device_put(a, self.batch_sharding)
                  for a in (*batch.arrays(), labels_of(batch, labels))]
        with jax.default_matmul_precision(self.precision):
            return self._step(params, opt_state, *arrays, key)

    def lower(self, shape: Shape) -> jax.stages.Lowered:
        """One step of `shape` traced from abstract params, optimizer state and batch, lowered but
        not run: `.compile()` it ahead of time, also for devices that are not attached."""
        params = nnx.to_pure_dict(self.abstract_state)
        opt_state = jax.eval_shape(self.tx.init, params)
        ids, segments, positions, cls_index = batch_specs(shape, shape.rows)
        labels = cls_index  # [B, S] int32, as the [CLS] columns
        key = jax.eval_shape(lambda: jax.random.key(0))
        with jax.default_matmul_precision(self.precision):
            return self._step.lower(params, opt_state, ids, segments, positions, cls_index, labels,
                                    key)

    def model(self, params: Params) -> DistilBertForSequenceClassification:
        """The model with these parameters (for evaluation and saving)."""
        return nnx.merge(self.graphdef, nnx.State(params))
