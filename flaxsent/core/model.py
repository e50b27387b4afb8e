"""Flax NNX DistilBERT for sequence classification, computing exactly what PyTorch computes."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flaxsent.core.config import DistilBertConfig

Array = jax.Array
DType = jnp.dtype | type


def sinusoidal_positions(n_positions: int, dim: int) -> np.ndarray:
    """DistilBERT's fixed table: sin on even features, cos on odd ones.  # [P, D]"""
    pos = np.arange(n_positions, dtype=np.float64)[:, None]
    freq = np.power(10000.0, 2 * (np.arange(dim) // 2) / dim)[None, :]
    angles = pos / freq
    table = np.empty((n_positions, dim), dtype=np.float64)
    table[:, 0::2] = np.sin(angles[:, 0::2])
    table[:, 1::2] = np.cos(angles[:, 1::2])
    return table.astype(np.float32)


def dropout(x: Array, rate: float, key: Array | None) -> Array:
    """Inverted dropout (zero with probability `rate`, scale the rest); identity when key is None
    (inference) or rate is 0."""
    if key is None or rate == 0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def _layer_norm(cfg: DistilBertConfig, dtype: DType, param_dtype: DType,
                rngs: nnx.Rngs) -> nnx.LayerNorm:
    # Two-pass variance, as torch computes it; the one-pass form drifts past 1e-5.
    return nnx.LayerNorm(cfg.dim, epsilon=cfg.layer_norm_eps, use_fast_variance=False,
                         dtype=dtype, param_dtype=param_dtype, rngs=rngs)


def dot_in_float32(lhs: Array, rhs: Array, dimension_numbers, precision=None,
                   preferred_element_type=None, out_sharding=None) -> Array:
    """`nnx.Linear`'s dot ([..., in] x [in, out]) of the operands as they are (bf16 in a bf16
    model), accumulated and returned in float32: the mixed precision of PyTorch's autocast,
    where what follows a matmul (bias, GELU, softmax, the residual sum) stays in float32 until
    the next LayerNorm, and the backward's matmuls take bf16 operands too.

    Accelerators' matrix units accumulate in float32 anyway; on a CPU it is also the form XLA
    hands to its fast bf16 kernels: bf16 x bf16 -> f32 [1024, 768] x [768, 3072] takes 3.1 ms on
    the 2-core Xeon, against 18.5 ms for bf16 -> bf16 and 16.7 ms in float32.
    """
    del preferred_element_type, out_sharding  # always float32; no sharding inside a layer
    if dimension_numbers != (((lhs.ndim - 1,), (0,)), ((), ())):
        raise ValueError(f"dot_in_float32 computes [..., in] x [in, out], not "
                         f"{dimension_numbers}")
    if lhs.dtype == rhs.dtype == jnp.float32:
        return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision)
    return _low_precision_dot(lhs, rhs, precision)


# Its own VJP rather than matmul_in_float32's over [M, K] rows: that form, swapaxes on the
# kernel included, ran bf16 attribution at 6.3 attributions/s against 8.2 (2-core Xeon).
@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _low_precision_dot(lhs: Array, rhs: Array, precision) -> Array:
    """[..., K] x [K, N] -> float32 [..., N] from low-precision operands."""
    return jax.lax.dot_general(lhs, rhs, (((lhs.ndim - 1,), (0,)), ((), ())),
                               precision=precision, preferred_element_type=jnp.float32)


def _low_precision_dot_fwd(lhs: Array, rhs: Array, precision):
    return _low_precision_dot(lhs, rhs, precision), (lhs, rhs)


def _low_precision_dot_bwd(precision, residuals, cotangent: Array):
    """Both gradients as bf16 x bf16 -> f32 matmuls, the cotangent rounded to the operands'
    dtype as autocast's backward does (JAX's own rule would multiply f32 by bf16, which XLA's
    CPU backend computes in float32, 5x slower)."""
    lhs, rhs = residuals
    g = cotangent.astype(lhs.dtype)  # [..., N]
    batch = tuple(range(lhs.ndim - 1))
    d_lhs = jax.lax.dot_general(g, rhs, (((g.ndim - 1,), (1,)), ((), ())), precision=precision,
                                preferred_element_type=jnp.float32)  # [..., K]
    d_rhs = jax.lax.dot_general(lhs, g, ((batch, batch), ((), ())), precision=precision,
                                preferred_element_type=jnp.float32)  # [K, N]
    return d_lhs.astype(lhs.dtype), d_rhs.astype(rhs.dtype)


_low_precision_dot.defvjp(_low_precision_dot_fwd, _low_precision_dot_bwd)


def matmul_in_float32(a: Array, b: Array) -> Array:
    """Batched [..., M, K] x [..., K, N] -> float32 [..., M, N] (same batch dims), attention's
    two matmuls, with `dot_in_float32`'s mixed precision forward and backward."""
    if a.dtype == b.dtype == jnp.float32:
        return jnp.matmul(a, b)
    return _low_precision_matmul(a, b)


@jax.custom_vjp
def _low_precision_matmul(a: Array, b: Array) -> Array:
    """[..., M, K] x [..., K, N] -> float32 [..., M, N] from low-precision operands."""
    return jnp.matmul(a, b, preferred_element_type=jnp.float32)


def _low_precision_matmul_fwd(a: Array, b: Array):
    return _low_precision_matmul(a, b), (a, b)


def _low_precision_matmul_bwd(residuals, cotangent: Array):
    """As `_low_precision_dot_bwd`, for batched matmuls."""
    a, b = residuals
    g = cotangent.astype(a.dtype)  # [..., M, N]
    d_a = jnp.matmul(g, jnp.swapaxes(b, -1, -2), preferred_element_type=jnp.float32)
    d_b = jnp.matmul(jnp.swapaxes(a, -1, -2), g, preferred_element_type=jnp.float32)
    return d_a.astype(a.dtype), d_b.astype(b.dtype)


_low_precision_matmul.defvjp(_low_precision_matmul_fwd, _low_precision_matmul_bwd)


def _linear(n_in: int, n_out: int, dtype: DType, param_dtype: DType,
            rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(n_in, n_out, dtype=dtype, param_dtype=param_dtype,
                      kernel_init=nnx.initializers.normal(0.02),
                      dot_general=dot_in_float32, rngs=rngs)


class Embeddings(nnx.Module):
    """Word + learned (or sinusoidal) position embeddings, then LayerNorm; no token types."""

    def __init__(self, cfg: DistilBertConfig, *, dtype: DType, param_dtype: DType,
                 rngs: nnx.Rngs):
        init = nnx.initializers.normal(0.02)
        self.word_embeddings = nnx.Embed(cfg.vocab_size, cfg.dim, dtype=dtype,
                                         param_dtype=param_dtype, embedding_init=init, rngs=rngs)
        self.position_embeddings = nnx.Embed(cfg.max_position_embeddings, cfg.dim, dtype=dtype,
                                             param_dtype=param_dtype, embedding_init=init,
                                             rngs=rngs)
        if cfg.sinusoidal_pos_embds:
            table = sinusoidal_positions(cfg.max_position_embeddings, cfg.dim)
            self.position_embeddings.embedding[...] = jnp.asarray(table, param_dtype)
        self.layer_norm = _layer_norm(cfg, dtype, param_dtype, rngs)
        self.dropout_rate = cfg.dropout

    def __call__(self, input_ids: Array, position_ids: Array | None = None,
                 dropout_key: Array | None = None) -> Array:
        return self.from_words(self.word_embeddings(input_ids), position_ids, dropout_key)

    def from_words(self, words: Array, position_ids: Array | None = None,
                   dropout_key: Array | None = None) -> Array:
        """The embedding output from word vectors [B, L, D] (looked up, or interpolated by
        attribution): positions added, then LayerNorm. [B, L, D]"""
        if position_ids is None:
            # iota, not arange(L)[None]: the same ids, and ONNX export (jax2onnx) keeps L
            # symbolic through it
            position_ids = jax.lax.broadcasted_iota(jnp.int32, (1, words.shape[1]), 1)
        x = words + self.position_embeddings(position_ids)  # [B, L, D]
        return dropout(self.layer_norm(x), self.dropout_rate, dropout_key)


class SelfAttention(nnx.Module):
    """Multi-head self-attention; padded keys masked with finfo.min, softmax in float32."""

    def __init__(self, cfg: DistilBertConfig, *, dtype: DType, param_dtype: DType,
                 rngs: nnx.Rngs):
        self.n_heads = cfg.n_heads
        self.head_dim = cfg.head_dim
        self.dropout_rate = cfg.attention_dropout
        self.q_lin = _linear(cfg.dim, cfg.dim, dtype, param_dtype, rngs)
        self.k_lin = _linear(cfg.dim, cfg.dim, dtype, param_dtype, rngs)
        self.v_lin = _linear(cfg.dim, cfg.dim, dtype, param_dtype, rngs)
        self.out_lin = _linear(cfg.dim, cfg.dim, dtype, param_dtype, rngs)

    def __call__(self, x: Array, keep: Array, queries: Array | None = None,
                 dropout_key: Array | None = None) -> Array:
        """Attention of `queries` [B, Q, D] (default: every row of x [B, K, D]) over x.

        keep: bool, broadcastable to [B, 1, Q, K]: [B, 1, 1, K] for padding, [B, 1, Q, K] for
        packed texts. dropout_key: drop attention weights (training). Returns [B, Q, D].
        """
        queries = x if queries is None else queries
        b, n_keys, d = x.shape
        n_queries = queries.shape[1]
        # Heads lead and keys are laid out [Dh, K], so both products are plain batched matmuls:
        # on XLA's CPU backend this layout runs attention about a third faster than einsums
        # that transpose (2-core Xeon, [16, 64] rows, 12 heads); accelerators are unaffected.
        # The projections return float32 (`dot_in_float32`); the matmuls take x's dtype.
        q = self.q_lin(queries).reshape(b, n_queries, self.n_heads, self.head_dim)
        q = (q.transpose(0, 2, 1, 3) / math.sqrt(self.head_dim)).astype(x.dtype)  # [B, H, Q, Dh]
        k = self.k_lin(x).reshape(b, n_keys, self.n_heads, self.head_dim)
        k = k.transpose(0, 2, 3, 1).astype(x.dtype)  # [B, H, Dh, K]
        v = self.v_lin(x).reshape(b, n_keys, self.n_heads, self.head_dim)
        v = v.transpose(0, 2, 1, 3).astype(x.dtype)  # [B, H, K, Dh]
        scores = matmul_in_float32(q, k)  # [B, H, Q, K] float32
        scores = jnp.where(keep, scores, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype)  # [B, H, Q, K]
        weights = dropout(weights, self.dropout_rate, dropout_key)
        context = matmul_in_float32(weights, v)  # [B, H, Q, Dh] float32
        context = context.transpose(0, 2, 1, 3).reshape(b, n_queries, d)  # [B, Q, D]
        return self.out_lin(context)  # [B, Q, D]


class FeedForward(nnx.Module):
    """lin2(act(lin1(x))) with the exact (erf) GELU that PyTorch uses."""

    def __init__(self, cfg: DistilBertConfig, *, dtype: DType, param_dtype: DType,
                 rngs: nnx.Rngs):
        self.activation = cfg.activation
        self.dropout_rate = cfg.dropout
        self.lin1 = _linear(cfg.dim, cfg.hidden_dim, dtype, param_dtype, rngs)
        self.lin2 = _linear(cfg.hidden_dim, cfg.dim, dtype, param_dtype, rngs)

    def __call__(self, x: Array, dropout_key: Array | None = None) -> Array:
        h = self.lin1(x)  # [B, L, F]
        h = jax.nn.gelu(h, approximate=False) if self.activation == "gelu" else jax.nn.relu(h)
        return dropout(self.lin2(h), self.dropout_rate, dropout_key)  # [B, L, D]


class TransformerBlock(nnx.Module):
    """Post-LayerNorm block: LN(x + attn(x)), then LN(h + ffn(h))."""

    def __init__(self, cfg: DistilBertConfig, *, dtype: DType, param_dtype: DType,
                 rngs: nnx.Rngs):
        self.attention = SelfAttention(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.sa_layer_norm = _layer_norm(cfg, dtype, param_dtype, rngs)
        self.ffn = FeedForward(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.output_layer_norm = _layer_norm(cfg, dtype, param_dtype, rngs)

    def __call__(self, x: Array, keep: Array, query_index: Array | None = None,
                 dropout_key: Array | None = None) -> Array:
        """[B, L, D] -> [B, L, D]; with query_index [B, Q], only those rows: [B, Q, D].

        Rows are independent after attention, so when only some outputs are needed (the
        [CLS] rows, in the last block) the rest are never computed. dropout_key: training.
        """
        keys = (None, None) if dropout_key is None else jax.random.split(dropout_key)
        queries = None if query_index is None else jnp.take_along_axis(
            x, query_index[:, :, None], axis=1)  # [B, Q, D]
        residual = x if queries is None else queries
        h = self.sa_layer_norm(residual + self.attention(x, keep, queries, keys[0]))
        return self.output_layer_norm(h + self.ffn(h, keys[1]))


class DistilBertForSequenceClassification(nnx.Module):
    """DistilBERT encoder + classification head: `model(ids, mask)` gives logits [B, num_labels]."""

    def __init__(self, cfg: DistilBertConfig, *, dtype: DType = jnp.float32,
                 param_dtype: DType = jnp.float32, rngs: nnx.Rngs):
        self.config = cfg
        self.embeddings = Embeddings(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.layers = nnx.List([
            TransformerBlock(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
            for _ in range(cfg.n_layers)
        ])
        self.pre_classifier = _linear(cfg.dim, cfg.dim, dtype, param_dtype, rngs)
        self.classifier = _linear(cfg.dim, cfg.num_labels, dtype, param_dtype, rngs)
        self.head_dropout_rate = cfg.seq_classif_dropout

    def hidden_states(self, input_ids: Array, attention_mask: Array | None = None) -> list[Array]:
        """The embedding output and every block's output (n_layers + 1 arrays [B, L, D])."""
        input_ids, attention_mask = _check_inputs(input_ids, attention_mask)
        keep = attention_mask[:, None, None, :].astype(bool)  # [B, 1, 1, K]
        x = self.embeddings(input_ids)
        states = [x]
        for block in self.layers:
            x = block(x, keep)
            states.append(x)
        return states

    def classify(self, cls_hidden: Array, dropout_key: Array | None = None) -> Array:
        """The head on [CLS] states: Linear, ReLU, (dropout), Linear.  [..., D] -> [..., C] f32"""
        h = jax.nn.relu(self.pre_classifier(cls_hidden))
        h = dropout(h, self.head_dropout_rate, dropout_key)
        return self.classifier(h).astype(jnp.float32)

    def __call__(self, input_ids: Array, attention_mask: Array | None = None) -> Array:
        """Logits [B, num_labels] (float32) for token ids [B, L] and a 0/1 mask [B, L]."""
        input_ids, attention_mask = _check_inputs(input_ids, attention_mask)
        keep = attention_mask[:, None, None, :].astype(bool)  # [B, 1, 1, K]
        x = self.embeddings(input_ids)
        for block in self.layers[:-1]:
            x = block(x, keep)
        cls_index = jnp.zeros((x.shape[0], 1), jnp.int32)  # [B, 1]
        x = self.layers[-1](x, keep, cls_index)  # [B, 1, D]: only [CLS] reaches the head
        return self.classify(x[:, 0])  # [B, C]

    def packed_logits(self, input_ids: Array, segment_ids: Array, position_ids: Array,
                      cls_index: Array, dropout_key: Array | None = None) -> Array:
        """Logits [B, S, C] of several texts packed per row.

        segment_ids [B, L]: 1.. per text, 0 for padding (a token attends only inside its text);
        position_ids [B, L]: positions restarting at 0 per text; cls_index [B, S]: where each
        text's [CLS] sits (slots without a text point anywhere and are ignored by the caller).
        dropout_key: a PRNG key turns the config's dropouts on (training); None is inference.
        """
        words = self.embeddings.word_embeddings(jnp.asarray(input_ids, jnp.int32))  # [B, L, D]
        return self.packed_logits_from_words(words, segment_ids, position_ids, cls_index,
                                             dropout_key)

    def packed_logits_from_words(self, words: Array, segment_ids: Array, position_ids: Array,
                                 cls_index: Array, dropout_key: Array | None = None) -> Array:
        """`packed_logits` from word vectors [B, L, D] instead of ids: what attribution
        differentiates (flaxsent/core/attribution.py). Logits [B, S, C]."""
        keys = [None] * (self.config.n_layers + 2) if dropout_key is None else \
            list(jax.random.split(dropout_key, self.config.n_layers + 2))
        segment_ids = jnp.asarray(segment_ids, jnp.int32)
        cls_index = jnp.asarray(cls_index, jnp.int32)
        real_key = segment_ids[:, None, :] > 0  # [B, 1, K]
        keep = (segment_ids[:, :, None] == segment_ids[:, None, :]) & real_key  # [B, L, K]
        x = self.embeddings.from_words(words, jnp.asarray(position_ids, jnp.int32), keys[0])
        for block, key in zip(self.layers[:-1], keys[1:-2], strict=True):
            x = block(x, keep[:, None], dropout_key=key)
        cls_segment = jnp.take_along_axis(segment_ids, cls_index, axis=1)  # [B, S]
        keep_cls = (cls_segment[:, :, None] == segment_ids[:, None, :]) & real_key  # [B, S, K]
        # [B, S, D]: the last block computes the [CLS] rows only
        x = self.layers[-1](x, keep_cls[:, None], cls_index, dropout_key=keys[-2])
        return self.classify(x, keys[-1])  # [B, S, C]


def _check_inputs(input_ids, attention_mask) -> tuple[Array, Array]:
    """Integer [B, L] ids (numpy or jax, int32 or int64) and a matching mask, as int32 arrays."""
    ids_dtype = getattr(input_ids, "dtype", None)
    if ids_dtype is None or not jnp.issubdtype(ids_dtype, jnp.integer):
        raise TypeError(f"input_ids must be an integer array, got {ids_dtype or type(input_ids)}")
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must have shape [batch, length], got {input_ids.shape}")
    if attention_mask is None:
        attention_mask = jnp.ones(input_ids.shape, jnp.int32)
    elif attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask shape {attention_mask.shape} differs from input_ids "
                         f"shape {input_ids.shape}")
    return jnp.asarray(input_ids).astype(jnp.int32), jnp.asarray(attention_mask).astype(jnp.int32)
