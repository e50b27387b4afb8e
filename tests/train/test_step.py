"""The training step: optax recipe, packed == padded gradients, and N steps equal PyTorch's."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from flaxsent.core import checkpoint as ckpt
from flaxsent.core.plan import StepPlan
from flaxsent.train.recipe import Recipe, decay_mask
from flaxsent.train.step import NO_LABEL, TrainStep, labels_of, loss_fn


def _examples(n: int, seed: int, vocab: int = 128, longest: int = 30,
              ) -> tuple[list[np.ndarray], np.ndarray]:
    """n random [CLS] ... [SEP] id arrays and labels."""
    rng = np.random.default_rng(seed)
    arrays = [np.concatenate([[2], rng.integers(5, vocab, int(k)), [3]]).astype(np.int32)
              for k in rng.integers(0, longest - 1, n)]
    return arrays, rng.integers(0, 2, n).astype(np.int32)


def _padded(arrays: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch ids and mask, each batch padded to its longest (dynamic padding)."""
    length = max(len(a) for a in arrays)
    ids = torch.zeros((len(arrays), length), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, a in enumerate(arrays):
        ids[i, :len(a)] = torch.from_numpy(a.astype(np.int64))
        mask[i, :len(a)] = 1
    return ids, mask


def test_decay_mask_spares_biases_and_layer_norms(tiny_hf):
    params = nnx.to_pure_dict(nnx.state(ckpt.load_model(tiny_hf)))
    mask = decay_mask(params)
    assert mask["layers"][0]["attention"]["q_lin"]["kernel"] is True
    assert mask["embeddings"]["word_embeddings"]["embedding"] is True
    assert mask["layers"][0]["attention"]["q_lin"]["bias"] is False
    assert mask["layers"][1]["sa_layer_norm"]["scale"] is False
    assert mask["embeddings"]["layer_norm"]["bias"] is False


def test_schedule_is_transformers_linear_warmup():
    recipe = Recipe(learning_rate=1e-3, warmup_steps=4, total_steps=10)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = transformers.get_linear_schedule_with_warmup(opt, 4, 10)
    theirs = []
    for _ in range(12):
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    ours = [float(recipe.schedule()(i)) for i in range(12)]
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-12)  # optax: float32


def test_packed_and_padded_steps_give_the_same_gradients(tiny_hf):
    model = ckpt.load_model(tiny_hf)
    arrays, labels = _examples(13, seed=1)
    graphdef, state = nnx.split(model)
    params = nnx.to_pure_dict(state)

    def grads(plan: StepPlan):
        batch = plan.batch(list(range(13)), arrays, pad_id=0)
        slot_labels = labels_of(batch, labels[batch.positions])

        def loss(p):
            return loss_fn(nnx.merge(graphdef, nnx.State(p)), batch.arrays(), slot_labels, None)

        with jax.default_matmul_precision("highest"):
            return batch, jax.jit(jax.value_and_grad(loss))(params)  # jit: eager takes 20 s

    packed_batch, (packed_loss, packed) = grads(StepPlan.build(64, 13))
    padded_batch, (padded_loss, padded) = grads(StepPlan.build(64, 13, packed=False))
    assert packed_batch.shape.rows < padded_batch.shape.rows  # packing did share rows
    assert abs(float(packed_loss) - float(padded_loss)) <= 1e-6
    for a, b in zip(jax.tree.leaves(packed), jax.tree.leaves(padded), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_labels_of_marks_empty_slots():
    arrays, labels = _examples(5, seed=2)
    batch = StepPlan.build(64, 5).batch(list(range(5)), arrays, pad_id=0)
    slots = labels_of(batch, labels[batch.positions])
    assert (slots != NO_LABEL).sum() == 5
    assert sorted(slots[slots != NO_LABEL].tolist()) == sorted(labels.tolist())


@pytest.mark.parametrize(("weight_decay", "max_grad_norm"), [(0.0, None), (0.01, 1.0)])
def test_steps_equal_pytorch_adamw_with_linear_warmup(tiny_hf, weight_decay, max_grad_norm):
    """N steps (dropout off, same batches): per-step loss within 1e-5, final logits 1e-4."""
    steps, per_step, lr = 6, 8, 1e-3
    recipe = Recipe(learning_rate=lr, warmup_steps=2, total_steps=steps,
                    weight_decay=weight_decay, max_grad_norm=max_grad_norm)
    model = ckpt.load_model(tiny_hf)
    trainer = TrainStep(model, recipe, dropout=False)
    params, opt_state = trainer.init(model)
    plan = StepPlan.build(64, per_step)
    data = [_examples(per_step, seed=10 + s) for s in range(steps)]
    ours = []
    for arrays, labels in data:
        batch = plan.batch(list(range(per_step)), arrays, pad_id=0)
        params, opt_state, loss, _ = trainer(params, opt_state, batch,
                                             labels[batch.positions], jax.random.key(0))
        ours.append(float(loss))

    torch_model = transformers.DistilBertForSequenceClassification.from_pretrained(tiny_hf)
    torch_model.eval()  # dropout off; gradients still flow
    no_decay = [p for n, p in torch_model.named_parameters()
                if n.endswith("bias") or "layer_norm" in n or "LayerNorm" in n]
    decay = [p for n, p in torch_model.named_parameters()
             if not (n.endswith("bias") or "layer_norm" in n or "LayerNorm" in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.999), eps=1e-8)
    sched = transformers.get_linear_schedule_with_warmup(opt, 2, steps)
    theirs = []
    for arrays, labels in data:
        ids, mask = _padded(arrays)
        out = torch_model(input_ids=ids, attention_mask=mask,
                          labels=torch.from_numpy(labels.astype(np.int64)))
        out.loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(torch_model.parameters(), max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad()
        theirs.append(float(out.loss.detach()))
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert abs(ours[-1] - ours[0]) > 1e-3  # the weights did move

    arrays, _ = _examples(10, seed=99)
    ids, mask = _padded(arrays)
    with torch.no_grad():
        expected = torch_model(input_ids=ids, attention_mask=mask).logits.numpy()
    with jax.default_matmul_precision("highest"):
        got = np.asarray(trainer.model(params)(jnp.asarray(ids.numpy()),
                                               jnp.asarray(mask.numpy())))
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_step_shapes_come_from_the_plan_and_compile_once(tiny_hf):
    model = ckpt.load_model(tiny_hf)
    trainer = TrainStep(model, Recipe(total_steps=20), dropout=True)
    params, opt_state = trainer.init(model)
    plan = StepPlan.build(64, 16)
    for seed in range(6):
        arrays, labels = _examples(16 if seed % 3 else 5, seed=seed, longest=40 + seed)
        batch = plan.batch(list(range(len(arrays))), arrays, pad_id=0)
        params, opt_state, loss, norm = trainer(params, opt_state, batch,
                                                labels[batch.positions], jax.random.key(seed))
        assert float(norm) > 0
        assert np.isfinite(float(loss))
    shapes = trainer.compiled_shapes
    assert len(shapes) == len(set(shapes)) >= 2
    assert set(shapes) <= {s.as_tuple() for s in plan.shapes()}
