"""Compile ahead of time for a TPU slice that is not here: every program flaxsent would run there.

The classifier's whole shape plan for the slice (a TPU batch budget; rows a multiple of 8 per
chip, TPU's sublane tile), each shape lowered through the mesh `Engine` and the `PmapEngine`,
and the training step the model card's recipe takes most often, all compiled by libtpu for the
slice's compile-only devices. Per program: XLA's FLOPs and bytes accessed, the memory of one
device, the padding TPU's tiled layouts add to the batch, the compile time, and a roofline
ESTIMATE of sentences/s (see `tpu.roofline`). Only shapes and dtypes are needed, never weights.
With `quantize='int8'` the forward programs are compiled a second time for the int8 model
(`flaxsent.core.quantize`), reported beside the float ones, their int8 matmuls at the chip's
int8 peak.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flaxsent.aot.tpu import Topology, get_topology, roofline
from flaxsent.core import checkpoint as ckpt
from flaxsent.core.classifier import default_precision, length_limit
from flaxsent.core.config import DistilBertConfig
from flaxsent.core.engine import Engine, PmapEngine, batch_specs, forward
from flaxsent.core.model import DistilBertForSequenceClassification
from flaxsent.core.plan import Shape, ShapePlan, StepPlan, batch_budget
from flaxsent.core.quantize import check_quantize, quantize_model
from flaxsent.core.tokenizer import TextTokenizer
from flaxsent.errors import AotError
from flaxsent.train.recipe import Recipe
from flaxsent.train.step import TrainStep

DTYPES = ("bfloat16", "float32")
ROWS_PER_CHIP = 8  # TPU tiles an array's second-minor dimension by 8 (sublanes)
CORPUS_SIZE = 8192  # SST-2-like sentences (bench.corpus) for packing density and the estimate
TRAIN_MAX_LENGTH = 128  # `flaxsent train`'s defaults, the model card's recipe
TRAIN_EXAMPLES = 32


@dataclasses.dataclass
class Program:
    """One compiled program and what XLA reports of it, all per device."""

    kind: str  # 'mesh' (Engine), 'pmap' (PmapEngine) or 'train' (TrainStep)
    shape: Shape
    items: float  # sentences (train: examples) one run of it carries
    flops: float
    bytes_accessed: float
    memory: dict[str, int]  # arguments, temporaries, outputs, aliased, generated code, total
    tiles: dict[str, dict[str, int]]  # per array group: logical and tiled (padded) bytes
    lower_s: float
    compile_s: float
    quantize: str = "none"  # 'int8': the encoder's dense layers as int8 matmuls
    int8_flops: float = 0.0  # of `flops`, those of int8 x int8 -> int32 matmuls

    def as_dict(self) -> dict[str, Any]:
        """The program as JSON-ready values."""
        return {"kind": self.kind, "quantize": self.quantize,
                "shape": list(self.shape.as_tuple()), "items": self.items,
                "flops": self.flops, "int8_flops": self.int8_flops,
                "bytes_accessed": self.bytes_accessed,
                "memory": self.memory, "tiles": self.tiles, "lower_s": round(self.lower_s, 3),
                "compile_s": round(self.compile_s, 3)}


@dataclasses.dataclass
class AotRun:
    """Everything one `compile_for_topology` call compiled and what it found."""

    topology: Topology
    model: str  # the folder (or 'embedded default')
    config: dict[str, Any]
    dtype: str
    precision: str
    plan: ShapePlan
    classifier_plan: ShapePlan  # what `Classifier` builds on this slice by default
    train_plan: StepPlan | None
    corpus: CorpusBatches
    programs: list[Program]
    traced: dict[str, list[tuple[int, int, int]]]  # shapes each engine traced, in order
    seconds: float
    quantize: str = "none"  # 'int8': int8 forward programs too, beside the float ones


def tpu_plan(max_length: int, n_devices: int) -> ShapePlan:
    """The classifier's plan for `n_devices` TPU devices: the TPU budget, rows a multiple of 8
    per device (the plan rounds rows to its `device_count`, so it is asked for 8 per device).

    Full rows only (rungs=1): the estimate is of a long corpus, whose last batches (the rungs
    with fewer rows, the same programs over fewer rows) are a rounding error."""
    return ShapePlan.build(max_length, max_batch_tokens=batch_budget("tpu", n_devices),
                           device_count=n_devices * ROWS_PER_CHIP, rungs=1)


def tiled_bytes(shape: Sequence[int], itemsize: int, layout: Any) -> int:
    """Bytes an array takes in a tiled layout: the minor dimensions padded to the first tile."""
    tiling = getattr(layout, "tiling", None)
    if not tiling:
        return math.prod(shape) * itemsize
    dims = [shape[d] for d in layout.major_to_minor]  # major to minor
    tile = tiling[0]
    dims = [1] * (len(tile) - len(dims)) + dims
    minor = [-(-d // t) * t for d, t in zip(dims[len(dims) - len(tile):], tile, strict=True)]
    return math.prod(dims[:len(dims) - len(tile)] + minor) * itemsize


def _group_bytes(infos: Any, formats: Any) -> dict[str, int]:
    """Logical and tiled bytes, on one device, of a group of arguments or results."""
    logical = tiled = 0
    for info, fmt in zip(jax.tree.leaves(infos), jax.tree.leaves(formats), strict=True):
        if fmt.layout is None:  # an argument XLA dropped as unused
            continue
        shape = fmt.sharding.shard_shape(tuple(info.shape))
        itemsize = jnp.dtype(info.dtype).itemsize
        logical += math.prod(shape) * itemsize
        tiled += tiled_bytes(shape, itemsize, fmt.layout)
    return {"logical": logical, "tiled": tiled}


def _tiles(compiled: jax.stages.Compiled, weights: int, batch: slice,
           logits: bool) -> dict[str, dict[str, int]]:
    """Tile padding of the weights, the batch's arrays and (inference) the logits."""
    infos, formats = compiled.args_info[0], compiled.input_formats[0]
    out = {"weights": _group_bytes(infos[weights], formats[weights]),
           "batch": _group_bytes(infos[batch], formats[batch])}
    if logits:
        out["logits"] = _group_bytes(compiled.out_info, compiled.output_formats)
    return out


def _memory(compiled: jax.stages.Compiled) -> dict[str, int]:
    stats = compiled.memory_analysis()
    memory = {"arguments": stats.argument_size_in_bytes, "temporaries": stats.temp_size_in_bytes,
              "outputs": stats.output_size_in_bytes, "aliased": stats.alias_size_in_bytes,
              "generated_code": stats.generated_code_size_in_bytes}
    memory["total"] = (memory["arguments"] + memory["temporaries"] + memory["outputs"]
                       - memory["aliased"] + memory["generated_code"])
    return memory


def int8_matmul_flops(jaxpr: Any) -> float:
    """FLOPs (2 per multiply-add) of a jaxpr's int8 x int8 dot_generals, nested jaxprs included."""
    total = 0.0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general" and \
                all(v.aval.dtype == jnp.int8 for v in eqn.invars[:2]):
            (lhs_contracting, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval
            total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * \
                math.prod(lhs.shape[d] for d in lhs_contracting)
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else (value,):
                inner = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr's, or a Jaxpr
                if hasattr(inner, "eqns"):
                    total += int8_matmul_flops(inner)
    return total


def forward_int8_flops(model: DistilBertForSequenceClassification, shape: Shape,
                       rows: int) -> float:
    """The int8 matmul FLOPs of the engines' forward for `rows` rows of `shape` (one device's
    share: rows / devices), traced from the (abstract) model; 0 for a float model."""
    graphdef, state = nnx.split(model)
    traced = jax.make_jaxpr(lambda s, *batch: forward(nnx.merge(graphdef, s), *batch))(
        state, *batch_specs(shape, rows))
    return int8_matmul_flops(traced.jaxpr)


def abstract_int8_model(cfg: DistilBertConfig, dtype: Any) -> DistilBertForSequenceClassification:
    """The int8 model (`quantize_model`) with shapes and dtypes but no memory."""
    return nnx.eval_shape(lambda: quantize_model(DistilBertForSequenceClassification(
        cfg, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0))))


def compile_program(kind: str, shape: Shape, items: float,
                    lower: Callable[[Shape], jax.stages.Lowered]) -> Program:
    """Lower and compile one program and read XLA's cost and memory analyses off it."""
    start = time.perf_counter()
    lowered = lower(shape)
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    done = time.perf_counter()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    # args: (state, ids, segments, positions, cls) / (params, opt state, those 4, labels, key)
    tiles = _tiles(compiled, 0, slice(1, 5), True) if kind != "train" else \
        _tiles(compiled, 0, slice(2, 7), False)
    return Program(kind=kind, shape=shape, items=float(items), flops=float(cost["flops"]),
                   bytes_accessed=float(cost["bytes accessed"]), memory=_memory(compiled),
                   tiles=tiles, lower_s=lowered_at - start, compile_s=done - lowered_at)


def _model_folder(model: str | None) -> Path:
    """The checkpoint folder (only config.json and the tokenizer are read), or the default's."""
    if model is not None:
        return ckpt.resolve_source(model)
    try:
        from flaxsent.embedded.default_model import default_model_folder
        return default_model_folder()
    except ImportError as e:
        raise AotError(f"building the embedded default model needs torch and transformers "
                       f"({e.name} is missing): pip install 'flaxsent[bench]', or pass --model "
                       "a checkpoint folder") from None


def corpus_lengths(tokenizer: TextTokenizer, n: int = CORPUS_SIZE) -> np.ndarray:
    """Token lengths of `n` SST-2-like sentences (the bench's corpus), truncated as predict does."""
    from flaxsent.embedded.corpus import generate_corpus
    _, lengths = tokenizer.encode_batch(generate_corpus(n, seed=0))
    return np.minimum(lengths, tokenizer.max_length)


@dataclasses.dataclass(frozen=True)
class CorpusBatches:
    """The SST-2-like corpus as the plan batches it (windows of 4096, as `Classifier`)."""

    lengths: np.ndarray  # [n] token lengths
    batches: dict[Shape, int]  # batches of each shape
    texts_per_packed_row: float  # mean texts in a used packed row

    @classmethod
    def of(cls, plan: ShapePlan, lengths: np.ndarray, pad_id: int) -> CorpusBatches:
        """Batch the corpus (only lengths matter) and count shapes and packed rows."""
        items = ((i, np.full(int(n), pad_id, np.int32)) for i, n in enumerate(lengths))
        batches: collections.Counter[Shape] = collections.Counter()
        texts = rows = 0
        for batch in plan.batches(items, pad_id):
            batches[batch.shape] += 1
            if batch.shape.packed:
                texts += batch.n_real
                rows += int((batch.segment_ids[:, 0] > 0).sum())
        return cls(lengths, dict(batches), texts / rows if rows else 1.0)


def _typical_step(plan: StepPlan, lengths: np.ndarray) -> Shape:
    """The step shape the recipe's steps take most often on the corpus (in file order)."""
    lengths = np.minimum(lengths, plan.length)
    counts: collections.Counter[Shape] = collections.Counter()
    for start in range(0, len(lengths) - TRAIN_EXAMPLES + 1, TRAIN_EXAMPLES):
        chunk = lengths[start:start + TRAIN_EXAMPLES]
        arrays = [np.zeros(int(n), np.int32) for n in chunk]
        counts[plan.batch(range(len(arrays)), arrays, 0).shape] += 1
    return counts.most_common(1)[0][0]


def compile_for_topology(topology: str, model: str | None = None, dtype: str = "bfloat16", *,
                         pmap: bool = True, train: bool = True, quantize: str = "none",
                         progress: Callable[[str], None] | None = None) -> AotRun:
    """Compile every program of the classifier (and a training step) for a named TPU slice.

    topology: e.g. 'v5e:2x2' (see `tpu.CHIPS`); model: a checkpoint folder or Hub id (only its
    config and tokenizer are read), default the bench's embedded full-size model.
    quantize='int8': every forward program a second time, for the int8 model, beside the
    `dtype` ones.
    """
    if dtype not in DTYPES:
        raise AotError(f"dtype {dtype!r}: choose {' or '.join(DTYPES)}")
    check_quantize(quantize)
    say = progress or (lambda _: None)
    start = time.perf_counter()
    topo = get_topology(topology)
    folder = _model_folder(model)
    cfg = ckpt.read_config(folder)
    try:
        tokenizer = TextTokenizer.from_folder(folder)
    except FileNotFoundError as e:
        raise AotError(str(e)) from None
    max_length = length_limit(tokenizer, cfg)
    tokenizer = tokenizer.with_max_length(max_length)
    n = len(topo.devices)
    plan = tpu_plan(max_length, n)
    precision = default_precision(dtype)
    lengths = corpus_lengths(tokenizer)
    corpus = CorpusBatches.of(plan, lengths, tokenizer.pad_id)
    abstract = ckpt.abstract_model(cfg, jnp.dtype(dtype), jnp.dtype(dtype))
    engines: list[tuple[str, str, Engine | PmapEngine]] = [
        ("mesh", "none", Engine(abstract, devices=topo.devices, precision=precision))]
    if pmap:
        engines.append(("pmap", "none",
                        PmapEngine(abstract, devices=topo.devices, precision=precision)))
    if quantize == "int8":
        int8 = abstract_int8_model(cfg, jnp.dtype(dtype))
        engines.append(("mesh", "int8", Engine(int8, devices=topo.devices, precision=precision)))
        if pmap:
            engines.append(("pmap", "int8",
                            PmapEngine(int8, devices=topo.devices, precision=precision)))
    programs = []
    traced = {}
    for kind, quantized, engine in engines:
        label = kind if quantized == "none" else f"{kind}-{quantized}"
        for shape in plan.shapes():
            say(f"compiling {label} {shape} for {topo.name}")
            items = shape.rows * (corpus.texts_per_packed_row if shape.packed else 1)
            program = compile_program(kind, shape, items, engine.lower)
            if quantized != "none":
                program.quantize = quantized  # its int8 matmuls: one device's share
                program.int8_flops = forward_int8_flops(int8, shape, shape.rows // n)
            programs.append(program)
        traced[label] = engine.compiled_shapes
    train_plan = None
    if train:
        train_plan = StepPlan.build(min(TRAIN_MAX_LENGTH, max_length), TRAIN_EXAMPLES, n)
        step = TrainStep(ckpt.abstract_model(cfg, jnp.dtype(dtype), jnp.float32), Recipe(),
                         devices=topo.devices, precision=precision)
        shape = _typical_step(train_plan, lengths)
        say(f"compiling train {shape} for {topo.name}")
        programs.append(compile_program("train", shape, TRAIN_EXAMPLES, step.lower))
        traced["train"] = step.compiled_shapes
    classifier_plan = ShapePlan.build(max_length, max_batch_tokens=batch_budget("tpu", n),
                                      device_count=n)
    return AotRun(topology=topo, model=str(folder) if model is not None else "embedded default",
                  config=cfg.to_hf_dict(), dtype=dtype, precision=precision, plan=plan,
                  classifier_plan=classifier_plan, train_plan=train_plan,
                  corpus=corpus, programs=programs, traced=traced,
                  seconds=time.perf_counter() - start, quantize=quantize)


def estimate(run: AotRun, program: Program) -> dict[str, Any]:
    """The roofline ESTIMATE of one program on the slice: time a run, items/s for the slice."""
    line = roofline(run.topology, program.flops, program.bytes_accessed, dtype=run.dtype,
                    precision=run.precision, int8_flops=program.int8_flops)
    return {"seconds": line.seconds, "bound": line.bound, "compute_s": line.compute_s,
            "memory_s": line.memory_s, "items_per_s": program.items / line.seconds}


def corpus_estimate(run: AotRun, quantize: str = "none") -> dict[str, Any]:
    """The ESTIMATE for the SST-2-like corpus as `Classifier` batches it, from the mesh
    programs' rooflines (the float ones, or the int8 ones), partial last batches included."""
    seconds = {p.shape: estimate(run, p)["seconds"] for p in run.programs
               if p.kind == "mesh" and p.quantize == quantize}
    corpus = run.corpus
    total = sum(seconds[shape] * k for shape, k in corpus.batches.items())
    n = len(corpus.lengths)
    return {"sentences": n, "mean_tokens": float(corpus.lengths.mean()),
            "texts_per_packed_row": corpus.texts_per_packed_row,
            "batches": {str(shape): k for shape, k in corpus.batches.items()},
            "seconds": total, "sentences_per_s": n / total}
