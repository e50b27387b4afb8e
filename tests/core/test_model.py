"""The Flax model against transformers' PyTorch DistilBertForSequenceClassification."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from flaxsent.core import checkpoint as ckpt
from flaxsent.core.config import BASE, TINY, DistilBertConfig
from flaxsent.core.model import DistilBertForSequenceClassification, sinusoidal_positions
from flaxsent.core.state_dict import torch_to_flax_params
from tests.helpers import build_hf_checkpoint, random_batch

TOL_TINY = 1e-5
TOL_FULL = 1e-4
# bfloat16 keeps 8 mantissa bits. Measured max |dlogit| vs torch fp32 (8 rows, seeds 0-4):
# tiny 0.002-0.006 (|logits| < 1); full size 0.03-0.06 (|logits| 2-4, weights std 0.05).
TOL_BF16 = 0.02
TOL_BF16_FULL = 0.15
FULL = dict(vocab_size=30522, dim=768, n_layers=6, n_heads=12, hidden_dim=3072,
            max_position_embeddings=512)
# weights of std 0.05 give logits of 2-4, like the trained SST-2 model's
FULL_SCALE = 0.05


def _pair(tmp_path, seed=0, **overrides):
    """(torch model, flax model) with identical random weights, through the real converter."""
    folder = tmp_path / f"hf{seed}"
    torch_model = build_hf_checkpoint(folder, seed=seed, **overrides)
    cfg = ckpt.read_config(folder)
    params, _ = torch_to_flax_params(ckpt.read_safetensors(folder / "model.safetensors"), cfg)
    return torch_model, cfg, params


def _torch_logits(model, ids, mask):
    with torch.no_grad():
        return model(torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_end_to_end_logits_match_torch(tmp_path, seed):
    torch_model, cfg, params = _pair(tmp_path, seed)
    model = ckpt.model_from_params(cfg, params)
    ids, mask = random_batch(np.random.default_rng(seed), cfg.vocab_size, 7, 19)
    with jax.default_matmul_precision("highest"):
        out = np.asarray(model(ids, mask))
    ref = _torch_logits(torch_model, ids, mask)
    assert out.shape == (7, 2) and out.dtype == np.float32
    assert np.abs(out - ref).max() <= TOL_TINY


def test_every_layer_matches_torch(tmp_path):
    torch_model, cfg, params = _pair(tmp_path, 3)
    model = ckpt.model_from_params(cfg, params)
    ids, mask = random_batch(np.random.default_rng(3), cfg.vocab_size, 5, 23)
    with torch.no_grad():
        ref = torch_model(torch.tensor(ids), attention_mask=torch.tensor(mask),
                          output_hidden_states=True).hidden_states
    with jax.default_matmul_precision("highest"):
        states = model.hidden_states(ids, mask)
    assert len(states) == len(ref) == cfg.n_layers + 1
    keep = mask.astype(bool)  # torch and flax differ only in what padded positions hold
    for i, (ours, theirs) in enumerate(zip(states, ref, strict=True)):
        delta = np.abs(np.asarray(ours) - theirs.numpy())[keep]
        assert delta.max() <= TOL_TINY, f"hidden state {i}: max |d| {delta.max():.2e}"


def test_cls_alone_rows_and_unpadded_rows_are_finite_and_match(tmp_path):
    torch_model, cfg, params = _pair(tmp_path, 4)
    model = ckpt.model_from_params(cfg, params)
    ids = np.full((3, 12), 0, np.int64)
    ids[:, 0] = 2
    ids[1, 1:6] = np.arange(10, 15)
    mask = np.zeros_like(ids)
    mask[0, 0] = 1  # [CLS] alone
    mask[1, :6] = 1
    mask[2, :] = 1
    with jax.default_matmul_precision("highest"):
        out = np.asarray(model(ids, mask))
    assert np.isfinite(out).all()
    assert np.abs(out - _torch_logits(torch_model, ids, mask)).max() <= TOL_TINY


def test_sinusoidal_positions(tmp_path):
    torch_model, cfg, params = _pair(tmp_path, 5, sinusoidal_pos_embds=True)
    table = torch_model.distilbert.embeddings.position_embeddings.weight.detach().numpy()
    np.testing.assert_allclose(sinusoidal_positions(cfg.max_position_embeddings, cfg.dim), table,
                               atol=1e-6)
    fresh = DistilBertForSequenceClassification(cfg, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(fresh.embeddings.position_embeddings.embedding[...], table,
                               atol=1e-6)
    model = ckpt.model_from_params(cfg, params)
    ids, mask = random_batch(np.random.default_rng(5), cfg.vocab_size, 4, 30)
    with jax.default_matmul_precision("highest"):
        out = np.asarray(model(ids, mask))
    assert np.abs(out - _torch_logits(torch_model, ids, mask)).max() <= TOL_TINY


def test_relu_activation(tmp_path):
    torch_model, cfg, params = _pair(tmp_path, 6, activation="relu")
    model = ckpt.model_from_params(cfg, params)
    ids, mask = random_batch(np.random.default_rng(6), cfg.vocab_size, 3, 9)
    with jax.default_matmul_precision("highest"):
        out = np.asarray(model(ids, mask))
    assert np.abs(out - _torch_logits(torch_model, ids, mask)).max() <= TOL_TINY


@pytest.mark.parametrize("param_dtype", [jnp.float32, jnp.bfloat16])
def test_bfloat16_compute_within_stated_tolerance(tmp_path, param_dtype):
    torch_model, cfg, params = _pair(tmp_path, 7)
    model = ckpt.model_from_params(cfg, params, dtype=jnp.bfloat16, param_dtype=param_dtype)
    ids, mask = random_batch(np.random.default_rng(7), cfg.vocab_size, 8, 21)
    out = np.asarray(model(ids, mask))
    assert out.dtype == np.float32 and np.isfinite(out).all()
    delta = np.abs(out - _torch_logits(torch_model, ids, mask)).max()
    assert delta <= TOL_BF16
    assert delta > 0  # it really ran in bfloat16


def _dots(jaxpr) -> list:
    """Every dot_general in a jaxpr, nested jaxprs (pjit, custom_jvp) included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append(eqn)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            found += _dots(sub)
    return found


def test_bfloat16_matmuls_take_bf16_operands_and_accumulate_in_float32(tmp_path):
    # autocast's mixed precision, forward and backward, and the form XLA's CPU backend runs on
    # its fast bf16 kernels (bf16 -> bf16, or f32 x bf16, there is 5-6x slower)
    _, cfg, params = _pair(tmp_path, 7)
    model = ckpt.model_from_params(cfg, params, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    ids, mask = random_batch(np.random.default_rng(7), cfg.vocab_size, 2, 9)
    dots = _dots(jax.make_jaxpr(lambda i, m: model(i, m))(ids, mask).jaxpr)
    # per block: 4 projections, 2 attention matmuls, 2 FFN layers; then the 2-layer head
    assert len(dots) == 8 * cfg.n_layers + 2

    def first_logit(words):  # what attribution differentiates: logits from word vectors
        segments = jnp.ones(ids.shape, jnp.int32)
        positions = jnp.broadcast_to(jnp.arange(ids.shape[1]), ids.shape)
        cls = jnp.zeros((ids.shape[0], 1), jnp.int32)
        return model.packed_logits_from_words(words, segments, positions, cls)[..., 0].sum()

    words = model.embeddings.word_embeddings(jnp.asarray(ids))
    backward = _dots(jax.make_jaxpr(jax.grad(first_logit))(words).jaxpr)
    assert len(backward) > len(dots)
    for eqn in dots + backward:
        assert [v.aval.dtype for v in eqn.invars] == [jnp.bfloat16] * 2, eqn
        assert eqn.outvars[0].aval.dtype == jnp.float32, eqn


def test_bfloat16_gradients_follow_float32_ones(tmp_path):
    _, cfg, params = _pair(tmp_path, 7)
    models = {dt: ckpt.model_from_params(cfg, params, dtype=dt, param_dtype=dt)
              for dt in (jnp.float32, jnp.bfloat16)}
    ids, _ = random_batch(np.random.default_rng(7), cfg.vocab_size, 4, 12)

    def grad(model):  # d(sum of logit 0) / d(word vectors), float32  [B, L, D]
        def objective(words):
            segments = jnp.ones(ids.shape, jnp.int32)
            positions = jnp.broadcast_to(jnp.arange(ids.shape[1]), ids.shape)
            cls = jnp.zeros((ids.shape[0], 1), jnp.int32)
            return model.packed_logits_from_words(words, segments, positions, cls)[..., 0].sum()
        words = model.embeddings.word_embeddings(jnp.asarray(ids))
        return np.asarray(jax.jit(jax.grad(objective))(words), np.float32)

    g32, g16 = grad(models[jnp.float32]), grad(models[jnp.bfloat16])
    assert np.abs(g16).max() > 0
    # bf16 keeps ~3 digits: measured 0.95% of the largest gradient on these 12-token rows
    assert np.abs(g16 - g32).max() <= 0.03 * np.abs(g32).max()


@pytest.mark.parametrize("to_input", [
    lambda a: a.astype(np.int32), lambda a: a.astype(np.int64),
    lambda a: jnp.asarray(a, jnp.int32)])
def test_accepts_numpy_and_jax_int32_int64(tmp_path, to_input):
    model = DistilBertForSequenceClassification(TINY, rngs=nnx.Rngs(0))
    ids = np.arange(12).reshape(2, 6) % TINY.vocab_size
    mask = np.ones_like(ids)
    out = model(to_input(ids), to_input(mask))
    np.testing.assert_allclose(out, model(ids.astype(np.int32), mask.astype(np.int32)), rtol=1e-6)


def test_bad_inputs_are_clear_errors():
    model = DistilBertForSequenceClassification(TINY, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="integer"):
        model(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[batch, length\]"):
        model(np.zeros((3,), np.int32))
    with pytest.raises(ValueError, match="attention_mask shape"):
        model(np.zeros((2, 3), np.int32), np.ones((2, 4), np.int32))


def test_full_size_shapes_with_eval_shape():
    model = ckpt.abstract_model(BASE)
    out = nnx.eval_shape(lambda m: m(jnp.zeros((8, 128), jnp.int32)), model)
    assert out.shape == (8, 2) and out.dtype == jnp.float32
    shapes = ckpt.param_shapes(BASE)
    assert shapes["embeddings/word_embeddings/embedding"] == (30522, 768)
    assert shapes["layers/5/ffn/lin1/kernel"] == (768, 3072)
    assert shapes["classifier/kernel"] == (768, 2)
    assert sum(int(np.prod(s)) for s in shapes.values()) == 66_955_010  # HF's parameter count
    states = nnx.eval_shape(lambda m: m.hidden_states(jnp.zeros((2, 512), jnp.int32)), model)
    assert len(states) == 7 and all(s.shape == (2, 512, 768) for s in states)


@pytest.fixture(scope="module")
def full_pair(tmp_path_factory):
    """A full-size (DistilBERT-base) random torch model and its converted params."""
    return _pair(tmp_path_factory.mktemp("full"), 11, scale=FULL_SCALE, **FULL)


@pytest.mark.slow
def test_full_size_parity(full_pair):
    """DistilBERT-base dimensions, random weights: logits within 1e-4 of PyTorch."""
    torch_model, cfg, params = full_pair
    assert DistilBertConfig(**{k: getattr(cfg, k) for k in FULL}, labels=cfg.labels) == BASE
    model = ckpt.model_from_params(cfg, params)
    ids, mask = random_batch(np.random.default_rng(11), cfg.vocab_size, 6, 64)
    with jax.default_matmul_precision("highest"):
        out = np.asarray(model(ids, mask))
    ref = _torch_logits(torch_model, ids, mask)
    assert np.abs(ref).max() > 1.0  # logits of a realistic size, not all near zero
    delta = np.abs(out - ref).max()
    assert delta <= TOL_FULL, f"full-size max |dlogit| {delta:.2e}"


@pytest.mark.slow
def test_full_size_bfloat16_parity(full_pair):
    torch_model, cfg, params = full_pair
    model = ckpt.model_from_params(cfg, params, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    ids, mask = random_batch(np.random.default_rng(12), cfg.vocab_size, 6, 64)
    ref = _torch_logits(torch_model, ids, mask)
    delta = np.abs(np.asarray(model(ids, mask)) - ref).max()
    assert 0 < delta <= TOL_BF16_FULL, f"full-size bf16 max |dlogit| {delta:.2e}"
