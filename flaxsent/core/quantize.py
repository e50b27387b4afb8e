"""int8 inference: the encoder's dense layers as int8 x int8 -> int32 matmuls.

`quantize_model(model, "int8")` swaps every block's six dense layers (q_lin, k_lin, v_lin,
out_lin, lin1, lin2) for an `Int8Linear`, quantized once, here:

- weights: int8 per output channel, symmetric: scale = max |column| / 127 of the [in, out]
  kernel, q = round(kernel / scale) in [-127, 127]; stored int8 with float32 scales [out];
- activations: int8 per token, dynamically (each call): scale = max |row| / 127 of the
  [..., in] input, q = round(x / scale);
- `jax.lax.dot_general(q_x, q_w, preferred_element_type=int32)`, then acc * (x scale * w
  scale) + bias in float32, cast to the layer's dtype.

Embeddings, LayerNorm, softmax, attention's two einsums and the classification head stay in
floating point. The swapped model has the same methods, so the same `forward` and `Engine`
compile it for the same shapes of the plan.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from flaxsent.core.model import DistilBertForSequenceClassification
from flaxsent.errors import FlaxsentError

Array = jax.Array
QUANTIZE = ("none", "int8")
INT8_MAX = 127  # symmetric: -127..127, so -x is always representable
ATTENTION_LAYERS = ("q_lin", "k_lin", "v_lin", "out_lin")
FFN_LAYERS = ("lin1", "lin2")


def check_quantize(quantize: object) -> str:
    """`quantize` when it is one of QUANTIZE, else a one-line FlaxsentError."""
    if not isinstance(quantize, str) or quantize not in QUANTIZE:
        raise FlaxsentError(f"quantize={quantize!r}: choose one of {', '.join(QUANTIZE)}")
    return quantize


class QuantizedWeight(nnx.Variable):
    """An int8 kernel or its float32 scales: state the engine places on its devices like any
    parameter, but not an `nnx.Param` (nothing trains it, no checkpoint holds it)."""


def _symmetric_scale(absmax: Array) -> Array:
    """absmax / 127, and 1 where absmax is 0 (an all-zero row or column quantizes to zeros);
    NaN and inf stay NaN and inf, so a non-finite input still gives non-finite logits."""
    return jnp.where(absmax == 0, 1.0, absmax / INT8_MAX)


def quantize_kernel(kernel: Array) -> tuple[Array, Array]:
    """An [in, out] kernel as int8 [in, out] and float32 scales [out] (per output channel)."""
    w = jnp.asarray(kernel, jnp.float32)
    scale = _symmetric_scale(jnp.max(jnp.abs(w), axis=0))  # [out]
    q = jnp.clip(jnp.round(w / scale), -INT8_MAX, INT8_MAX).astype(jnp.int8)
    return q, scale.astype(jnp.float32)


def quantize_rows(x: Array) -> tuple[Array, Array]:
    """Activations [..., in] as int8 [..., in] and float32 scales [..., 1] (per token)."""
    x = x.astype(jnp.float32)
    scale = _symmetric_scale(jnp.max(jnp.abs(x), axis=-1, keepdims=True))  # [..., 1]
    # one division a row, then a multiply an element
    q = jnp.clip(jnp.round(x * (1.0 / scale)), -INT8_MAX, INT8_MAX).astype(jnp.int8)
    return q, scale


class Int8Linear(nnx.Module):
    """`nnx.Linear`'s computation with an int8 kernel and per-token int8 activations."""

    def __init__(self, kernel: Array, scale: Array, bias: Array | None, dtype):
        self.kernel = QuantizedWeight(kernel)  # int8 [in, out]
        self.kernel_scale = QuantizedWeight(scale)  # float32 [out]
        self.bias = None if bias is None else nnx.Param(bias)  # [out]
        self.dtype = dtype

    @classmethod
    def from_linear(cls, linear: nnx.Linear) -> Int8Linear:
        """Quantize a float `nnx.Linear` (once)."""
        q, scale = quantize_kernel(linear.kernel[...])
        bias = None if linear.bias is None else linear.bias[...]
        return cls(q, scale, bias, linear.dtype)

    def __call__(self, x: Array) -> Array:
        """[..., in] -> [..., out] in the layer's dtype (the input's when it has none)."""
        q, x_scale = quantize_rows(x)  # int8 [..., in], float32 [..., 1]
        acc = jax.lax.dot_general(q, self.kernel[...], (((q.ndim - 1,), (0,)), ((), ())),
                                  preferred_element_type=jnp.int32)  # int32 [..., out]
        y = acc.astype(jnp.float32) * (x_scale * self.kernel_scale[...])
        if self.bias is not None:
            y = y + self.bias[...].astype(jnp.float32)
        # A fusion boundary: libtpu 0.0.42 segfaults compiling a bf16 model whose q and k
        # int8 matmuls fuse on into attention's einsum (tests/aot); no cost measured on CPU.
        return jax.lax.optimization_barrier(y.astype(self.dtype or x.dtype))


def quantize_model(model: DistilBertForSequenceClassification,
                   quantize: str = "int8") -> DistilBertForSequenceClassification:
    """The model with its encoder's dense layers quantized (`quantize='int8'`), or the model
    itself (`'none'`). The argument is left as it was: the result is a new module tree whose
    float arrays are the same (immutable) arrays."""
    if check_quantize(quantize) == "none":
        return model
    if is_quantized(model):
        return model
    graphdef, state = nnx.split(model)
    out = nnx.merge(graphdef, state)  # new modules and variables over the same arrays
    for block in out.layers:
        for name in ATTENTION_LAYERS:
            setattr(block.attention, name, Int8Linear.from_linear(getattr(block.attention, name)))
        for name in FFN_LAYERS:
            setattr(block.ffn, name, Int8Linear.from_linear(getattr(block.ffn, name)))
    return out


def is_quantized(model: nnx.Module) -> bool:
    """Whether the model holds int8 layers."""
    return any(isinstance(m, Int8Linear) for _, m in nnx.iter_modules(model))


def quantization_of(model: nnx.Module) -> str:
    """'int8' for a model `quantize_model` quantized, else 'none'."""
    return "int8" if is_quantized(model) else "none"
