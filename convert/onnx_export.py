"""A checkpoint as ONNX graphs (`flaxsent export SRC DST --format onnx`).

DST gets what ONNX Runtime and Optimum's ORT classes load as is, and what flaxsent's
`onnxruntime` runtime packs with:

- `model.onnx`: Hugging Face's interface, input_ids and attention_mask int64 [batch, sequence]
  to logits float32 [batch, num_labels];
- `model_packed.onnx`: the engine's forward, `model.packed_logits` (ids, segment ids, position
  ids [batch, sequence], [CLS] columns [batch, slots] to logits [batch, slots, num_labels]);
- `config.json` and the tokenizer files;
- with `quantize='int8'`, `model_quantized.onnx` and `model_packed_quantized.onnx`: ONNX
  Runtime's dynamic quantization (int8 weights per output channel, activations quantized per
  batch as they come) of the linears that tolerate it, the others (`INT8_KEEP_FLOAT`) left in
  float.

jax2onnx traces the Flax model itself, `model(input_ids, attention_mask)` and
`model.packed_logits`: the functions the JAX engine runs, so the graphs compute what flaxsent
computes (tested against PyTorch). JAX traces integers as int32 (x64 off), so each graph input
is retyped to int64, HF's type, with a Cast to int32 inside.

Nothing moves into DST unless every graph passes `onnx.checker.check_model(full_check=True)`,
loads in ONNX Runtime with every graph optimization, and gives the model's logits on a probe
batch (float32 graphs; int8 graphs must give finite logits of the right shape).

This module exists for the `onnx` extra: it imports onnx, onnxruntime and jax2onnx at its top
(`flaxsent export` turns their absence into a one-line error).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import onnxruntime as ort
from jax2onnx import to_onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from flaxsent.core import checkpoint as ckpt
from flaxsent.core.checkpoint import params_of
from flaxsent.core.model import DistilBertForSequenceClassification
from flaxsent.core.onnx_engine import PACKED_INPUTS, STANDARD_INPUTS
from flaxsent.errors import CheckpointError
from flaxsent.version import __version__

DEFAULT_OPSET = 17  # the oldest with LayerNormalization: the widest range of runtimes
OPSETS = range(17, 24)  # each exports, passes the checker and runs in the extra's onnxruntime
QUANTIZATIONS = ("int8",)
# LayerNorm as ONNX's LayerNormalization (opset 17+) rather than jax2onnx's decomposition (which
# computes the variance in float64): parity with PyTorch holds on full-size weights (tested).
NORMALIZATION = "prefer_native"
# int8: quantize_dynamic's settings, and the linears (Flax path patterns) kept in float. Measured
# on the embedded full-size model (realistic logits), 872 corpus sentences vs PyTorch fp32, through
# the runtime (docs/converting.md, "int8"): with one activation scale per matmul and batch, 98.5%
# argmax agreement needs all but the attention's q, k and v projections in float, and layer 0
# whole (99.1%, 8 flips; with layer 0's too 98.6%); the whole encoder in int8 gives 94.4%.
INT8_PER_CHANNEL = True
# In dynamic mode ONNX Runtime rewrites each Gemm as MatMul ('NAME_MatMul') + Add first, then
# quantizes the MatMuls whose weight is an initializer (the embeddings' Gathers stay float).
INT8_OP_TYPES = ("MatMul",)
INT8_KEEP_FLOAT = ("pre_classifier", "classifier", "layers/0", "layers/*/attention/out_lin",
                   "layers/*/ffn")
_PROBE_TOLERANCE = 1e-3  # float32 graph vs the Flax model on the probe batch, times max(1, |logit|)

log = logging.getLogger("flaxsent")


@dataclasses.dataclass
class OnnxExportReport:
    """What an ONNX export wrote, for the CLI summary and for tests."""

    source: str
    opset: int
    graphs: list[str]
    quantize: str | None = None
    quantized: list[str] = dataclasses.field(default_factory=list)  # linears made int8
    keep_float: tuple[str, ...] = ()  # the patterns of the linears left in float
    tokenizer_files: list[str] = dataclasses.field(default_factory=list)

    def summary(self, dst: str | os.PathLike) -> str:
        lines = [f"exported {self.source} -> {dst} (ONNX opset {self.opset})",
                 f"  graphs: {', '.join(self.graphs)}"]
        if self.quantize:
            kept = ", ".join(self.keep_float) or "none"
            lines.append(f"  {self.quantize}: ONNX Runtime dynamic quantization of "
                         f"{len(self.quantized)} linears; kept in float: {kept}")
        tok = ", ".join(self.tokenizer_files) or "none found (prediction needs vocab.txt or "\
            "tokenizer.json)"
        lines.append(f"  tokenizer files: {tok}")
        return "\n".join(lines)


def check_opset(opset: object) -> int:
    """The opset as an int within OPSETS, or a one-line error."""
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in OPSETS:
        raise CheckpointError(f"--opset {opset}: choose an ONNX opset from {OPSETS.start} to "
                              f"{OPSETS.stop - 1} (default {DEFAULT_OPSET})")
    return opset


def export_onnx(src: str | os.PathLike, dst: str | os.PathLike, *, quantize: str | None = None,
                opset: int = DEFAULT_OPSET, force: bool = False,
                int8_keep_float: Sequence[str] = INT8_KEEP_FLOAT) -> OnnxExportReport:
    """Export any folder flaxsent loads (converted Flax, HF PyTorch, `flaxsent train` output) or
    Hub id to an ONNX folder, atomically (all or nothing; --force as `convert`'s).

    int8_keep_float: with quantize='int8', the Flax path patterns of the linears left in float
    (default INT8_KEEP_FLOAT; ('pre_classifier', 'classifier') quantizes the whole encoder:
    faster, less exact)."""
    opset = check_opset(opset)
    quantize = None if quantize == "none" else quantize
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise CheckpointError(f"--quantize {quantize}: choose {', '.join(QUANTIZATIONS)}")
    folder = ckpt.resolve_source(src)
    cfg = ckpt.read_config(folder)
    from flaxsent.core.tokenizer import copy_tokenizer_files
    report = OnnxExportReport(source=str(src), opset=opset, graphs=[], quantize=quantize,
                              keep_float=tuple(int8_keep_float) if quantize else ())
    with ckpt.checkpoint_output_dir(dst, force=force, source=folder) as out:
        model = ckpt.load_model(folder, dtype=jnp.float32)  # bf16 weights export as float32
        standard, packed = probe_batches(model)
        for name, build, probe in ((ckpt.ONNX_MODEL, standard_graph, standard),
                                   (ckpt.ONNX_PACKED, packed_graph, packed)):
            write_graph(build(model, opset), out / name)
            verify(out / name, probe, tolerance=_PROBE_TOLERANCE)
            report.graphs.append(name)
        if quantize == "int8":
            for name, target, probe in (
                    (ckpt.ONNX_MODEL, ckpt.ONNX_QUANTIZED, standard),
                    (ckpt.ONNX_PACKED, ckpt.ONNX_PACKED_QUANTIZED, packed)):
                report.quantized = quantize_int8(out / name, out / target, model,
                                                 keep_float=int8_keep_float)
                verify(out / target, probe, tolerance=None)
                report.graphs.append(target)
        cfg.save_json(out / ckpt.CONFIG)
        report.tokenizer_files = copy_tokenizer_files(folder, out)
    return report


# ---- the graphs -----------------------------------------------------------------------------


def standard_graph(model: DistilBertForSequenceClassification, opset: int) -> onnx.ModelProto:
    """HF's interface: input_ids, attention_mask int64 [batch, sequence] -> logits [batch, C]."""
    def logits(input_ids, attention_mask):
        return model(input_ids, attention_mask)

    tokens = jax.ShapeDtypeStruct(("batch", "sequence"), np.int32)
    return _trace(logits, [tokens, tokens], STANDARD_INPUTS, opset, "standard")


def packed_graph(model: DistilBertForSequenceClassification, opset: int) -> onnx.ModelProto:
    """The engine's forward: ids, segments, positions [batch, sequence] and [CLS] columns
    [batch, slots] int64 -> logits [batch, slots, C] (`model.packed_logits`)."""
    def packed_logits(input_ids, segment_ids, position_ids, cls_index):
        return model.packed_logits(input_ids, segment_ids, position_ids, cls_index)

    tokens = jax.ShapeDtypeStruct(("batch", "sequence"), np.int32)
    columns = jax.ShapeDtypeStruct(("batch", "slots"), np.int32)
    return _trace(packed_logits, [tokens, tokens, tokens, columns], PACKED_INPUTS, opset,
                  "packed")


def _trace(fn: Callable, specs: list, names: Sequence[str], opset: int,
           kind: str) -> onnx.ModelProto:
    # onnx_ir warns about every initializer it names; nothing for a user to act on
    logging.getLogger("onnx_ir.serde").setLevel(logging.ERROR)
    with jax.default_matmul_precision("highest"), warnings.catch_warnings():
        # jax2onnx's Flax plugins read `.value`, which flax deprecates: not the user's concern
        warnings.simplefilter("ignore", DeprecationWarning)
        graph = to_onnx(fn, specs, input_names=list(names), output_names=["logits"],
                        model_name=f"flaxsent_distilbert_{kind}", opset=opset,
                        normalization_mode=NORMALIZATION)
    graph = int64_inputs(graph)
    graph.doc_string = (f"flaxsent {__version__}: DistilBERT sequence classification, the "
                        f"{kind} interface")
    helper.set_model_props(graph, {"flaxsent.version": __version__, "flaxsent.graph": kind})
    return graph


def int64_inputs(graph: onnx.ModelProto) -> onnx.ModelProto:
    """Retype every int32 graph input to int64 (HF's type), with a Cast to int32 in front of its
    uses: JAX (x64 off) traces integer inputs as int32."""
    g = graph.graph
    casts = []
    for value in g.input:
        tensor = value.type.tensor_type
        if tensor.elem_type != TensorProto.INT32:
            continue
        inner = f"{value.name}__int32"
        for node in g.node:
            for i, name in enumerate(node.input):
                if name == value.name:
                    node.input[i] = inner
        if any(out.name == value.name for out in g.output):
            raise RuntimeError(f"internal error: graph input {value.name} is also an output")
        tensor.elem_type = TensorProto.INT64
        casts.append(helper.make_node("Cast", [value.name], [inner], to=TensorProto.INT32,
                                      name=f"{value.name}__cast"))
    for cast in reversed(casts):
        g.node.insert(0, cast)
    return graph


def write_graph(graph: onnx.ModelProto, path: Path) -> None:
    """One file, weights inside (DistilBERT-base is 268 MB, well under protobuf's 2 GB)."""
    onnx.save_model(graph, str(path))


# ---- int8 -----------------------------------------------------------------------------------


def quantize_int8(src: Path, dst: Path, model: DistilBertForSequenceClassification, *,
                  keep_float: Sequence[str] = INT8_KEEP_FLOAT,
                  per_channel: bool = INT8_PER_CHANNEL,
                  op_types: Sequence[str] = INT8_OP_TYPES) -> list[str]:
    """ONNX Runtime's dynamic int8 quantization of `src` into `dst`, the linears under the Flax
    path patterns `keep_float` ('classifier', 'layers/5', 'layers/*/ffn/lin2') left in float;
    returns the linears quantized."""
    nodes = linear_nodes(onnx.load(str(src)), model)
    kept = {node: path for node, path in nodes.items()
            if any(fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(path, p + "/*")
                   for p in keep_float)}
    exclude = [name for node in kept for name in (node, f"{node}_MatMul")]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer's advice (pre-processing) on the root logger
    try:
        quantize_dynamic(str(src), str(dst), per_channel=per_channel,
                         weight_type=QuantType.QInt8, op_types_to_quantize=list(op_types),
                         nodes_to_exclude=exclude)
    finally:
        root.setLevel(level)
    return sorted(set(nodes.values()) - set(kept.values()))


def linear_nodes(graph: onnx.ModelProto, model: DistilBertForSequenceClassification,
                 ) -> dict[str, str]:
    """Each MatMul/Gemm node whose weight is a model kernel -> that linear's Flax path
    ('layers/5/ffn/lin1'), found by the weight's bytes (jax2onnx names nodes by position).
    Linears with equal kernels (a fresh or zeroed checkpoint) take their paths in turn."""
    def key(array: np.ndarray) -> tuple:
        data = np.ascontiguousarray(array, np.float32)
        return data.shape, hashlib.sha256(data.tobytes()).hexdigest()

    kernels: dict[tuple, list[str]] = {}
    for path, array in params_of(model).items():
        if path.endswith("/kernel"):
            kernels.setdefault(key(array), []).append(path.removesuffix("/kernel"))
            if array.shape[0] != array.shape[1]:  # a graph may hold it as [out, in]
                kernels.setdefault(key(array.T), []).append(path.removesuffix("/kernel"))
    weights = {init.name: init for init in graph.graph.initializer}
    found = {}
    for node in graph.graph.node:
        if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 \
                and node.input[1] in weights:
            paths = kernels.get(key(numpy_helper.to_array(weights[node.input[1]])))
            if paths:
                found[node.name] = paths.pop(0)
    expected = {p.removesuffix("/kernel") for p in params_of(model) if p.endswith("/kernel")}
    if set(found.values()) != expected:
        missing = sorted(expected - set(found.values()))
        raise RuntimeError(f"internal error: no matmul of the graph has the weights of {missing}")
    return found


# ---- checks ---------------------------------------------------------------------------------


def probe_batches(model: DistilBertForSequenceClassification,
                  ) -> tuple[tuple[dict, np.ndarray], tuple[dict, np.ndarray]]:
    """A small padded batch and a small packed one, with the Flax model's logits for each."""
    cfg = model.config
    rng = np.random.default_rng(0)
    length = min(12, cfg.max_position_embeddings)
    ids = rng.integers(0, cfg.vocab_size, (2, length)).astype(np.int64)  # [2, L]
    mask = np.ones_like(ids)
    mask[1, length // 2:] = 0
    with jax.default_matmul_precision("highest"):
        expected = np.asarray(model(ids, mask), np.float32)  # [2, C]
    first = length // 3  # row 0: two texts; row 1: one text, then padding
    segments = np.zeros_like(ids)
    segments[0, :first], segments[0, first:] = 1, 2
    segments[1, :length // 2] = 1
    positions = np.zeros_like(ids)
    positions[0, :first] = np.arange(first)
    positions[0, first:] = np.arange(length - first)
    positions[1, :length // 2] = np.arange(length // 2)
    columns = np.array([[0, first], [0, 0]], np.int64)  # [2, S]
    with jax.default_matmul_precision("highest"):
        packed = np.asarray(model.packed_logits(ids, segments, positions, columns), np.float32)
    return ({"input_ids": ids, "attention_mask": mask}, expected), (
        dict(zip(PACKED_INPUTS, (ids, segments, positions, columns), strict=True)), packed)


def verify(path: Path, probe: tuple[dict, np.ndarray], tolerance: float | None) -> None:
    """The checker (full check), ONNX Runtime with every optimization, and the probe's logits:
    within `tolerance` (times max(1, |logit|)) of the model's, or for None finite and of the
    model's shape."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as e:
        raise RuntimeError(f"internal error: {path.name} fails the ONNX checker: {e}") from None
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds, expected = probe
    got = session.run(["logits"], feeds)[0]
    if got.shape != expected.shape or (not np.isfinite(got).all()
                                       and np.isfinite(expected).all()):
        raise RuntimeError(f"internal error: {path.name} gives logits of shape {got.shape} "
                           f"(finite: {bool(np.isfinite(got).all())}), the model "
                           f"{expected.shape}")
    if tolerance is not None and np.isfinite(expected).all():
        worst = float(np.abs(got - expected).max())
        if not worst <= tolerance * max(1.0, float(np.abs(expected).max())):
            raise RuntimeError(f"internal error: {path.name} differs from the model by {worst:.3g} "
                               "on the probe batch; please report this")
