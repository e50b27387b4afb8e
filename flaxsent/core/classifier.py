"""The user-facing `Classifier`: texts in, transformers-pipeline-identical scores out."""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flaxsent.core import checkpoint as ckpt
from flaxsent.core.attribution import (
    METHODS,
    AttributionEngine,
    Explanation,
    attribute,
    baseline_ids,
    words_of,
)
from flaxsent.core.config import DistilBertConfig
from flaxsent.core.engine import Engine, PmapEngine, enable_compilation_cache
from flaxsent.core.model import DistilBertForSequenceClassification
from flaxsent.core.onnx_engine import OnnxEngine
from flaxsent.core.plan import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_RUNGS,
    Batch,
    OrderedCollector,
    ShapePlan,
    batch_budget,
    default_pack_length,
)
from flaxsent.core.quantize import check_quantize, quantization_of, quantize_model
from flaxsent.core.tokenizer import TextTokenizer
from flaxsent.errors import FlaxsentError, NonFiniteLogitsError

log = logging.getLogger("flaxsent")

FUNCTIONS = ("softmax", "sigmoid", "none")
BACKENDS = ("mesh", "pmap")
RUNTIMES = ("jax", "onnxruntime")
_IN_FLIGHT = 2  # batches dispatched ahead of the one being collected


@dataclasses.dataclass
class RunStats:
    """What the last call did: inputs, truncations, batches, real vs computed tokens, time."""

    n_inputs: int = 0
    n_truncated: int = 0
    n_batches: int = 0
    real_tokens: int = 0
    computed_tokens: int = 0
    seconds: float = 0.0

    @property
    def padding_efficiency(self) -> float:
        return self.real_tokens / self.computed_tokens if self.computed_tokens else 1.0


class Classifier:
    """A DistilBERT text classifier compiled once per shape of its plan and run data-parallel."""

    def __init__(self, model: DistilBertForSequenceClassification | None,
                 tokenizer: TextTokenizer, *,
                 max_length: int | None = None, boundaries: Sequence[int] | None = None,
                 max_batch_tokens: int | None = None,
                 max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
                 devices: int | Sequence[jax.Device] | None = None,
                 precision: str | None = None, backend: str = "mesh", window: int = 4096,
                 pack_length: int | None | str = "auto", quantize: str = "none",
                 rungs: int = DEFAULT_RUNGS, engine: OnnxEngine | None = None):
        """`model` runs on the JAX engine (devices, precision and backend are its options); or
        `model=None` and an `engine` with its own device and precision (an `OnnxEngine`, as
        `from_pretrained(..., runtime='onnxruntime')` builds), same plan and outputs. An engine
        without a packed graph runs buckets only (pack_length is then None). pack_length:
        tokens a packed row holds, None for buckets only, 'auto' the default for the platform,
        quantization and dtype (`plan.default_pack_length`). rungs: row counts a shape's last
        batch may run at (`plan.row_rungs`; 1: always full rows)."""
        cfg = _config_of(model, engine, devices=devices, precision=precision, backend=backend)
        if engine is None:
            # int8: the encoder's dense layers quantized once, here (flaxsent/core/quantize.py);
            # the same forward and plan compile it, for the same shapes
            model = quantize_model(model, check_quantize(quantize))
        elif quantize not in ("none", engine.quantize):
            raise FlaxsentError(f"quantize={quantize!r}: the engine runs {engine.files[0]}")
        elif not engine.packs:
            pack_length = None
        if tokenizer.vocab_size > cfg.vocab_size:  # Flax's lookup gives NaN past the table
            raise FlaxsentError(
                f"the tokenizer has ids up to {tokenizer.vocab_size - 1} but the model's "
                f"embedding has {cfg.vocab_size} rows (vocab_size in config.json): texts with "
                "those tokens would get NaN scores; use the tokenizer the model was trained with")
        limit = length_limit(tokenizer, cfg)
        if max_length is None:
            max_length = limit
        elif isinstance(max_length, bool) or not isinstance(max_length, int) \
                or not 3 <= max_length <= limit:
            raise FlaxsentError(f"max_length={max_length!r}: must be an integer from 3 to the "
                                f"model's limit of {limit} tokens")
        if backend not in BACKENDS:
            raise FlaxsentError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        if precision is None and engine is None:
            precision = default_precision(model.embeddings.word_embeddings.dtype or jnp.float32)
        self.model = model
        # 'int8' or 'none'
        self.quantize = quantization_of(model) if engine is None else engine.quantize
        self.config = cfg
        self.labels = cfg.labels
        self.tokenizer = tokenizer if tokenizer.max_length == max_length else \
            tokenizer.with_max_length(max_length)
        if engine is None:
            engine_cls = Engine if backend == "mesh" else PmapEngine
            engine = engine_cls(model, devices=devices, precision=precision)
        self.engine = engine
        self.runtime = "jax" if model is not None else engine.runtime
        platform = self.engine.devices[0].platform
        if max_batch_tokens is None:
            max_batch_tokens = batch_budget(platform, self.engine.n_devices)
        # 'auto': the platform's default, and for attribution's gradients a plan of their own
        # where that default differs (shorter rows on a CPU)
        gradient_pack_length = pack_length
        if pack_length == "auto":
            pack_length = default_pack_length(platform, self.quantize, self.dtype)
            gradient_pack_length = default_pack_length(platform, self.quantize, self.dtype,
                                                       gradients=True)
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise FlaxsentError(f"window={window!r}: must be a positive number of texts")

        def plan(pack: int | None) -> ShapePlan:
            try:
                return ShapePlan.build(max_length, boundaries=boundaries,
                                       max_batch_tokens=max_batch_tokens,
                                       device_count=self.engine.n_devices,
                                       max_batch_size=max_batch_size, pack_length=pack,
                                       rungs=rungs)
            except ValueError as e:
                raise FlaxsentError(str(e)) from None

        self.plan = plan(pack_length)
        self.attribution_plan = self.plan if gradient_pack_length == pack_length else \
            plan(gradient_pack_length)
        self._window = window
        self.last_run = RunStats()
        self.source: Path | None = None  # the folder from_pretrained loaded, when it did
        self.attribution_engine: AttributionEngine | None = None  # built by the first explain

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | Path, *, dtype: str = "float32",
                        quantize: str = "none", compilation_cache: bool = True,
                        cache_dir: str | Path | None = None, runtime: str = "jax",
                        **options: Any) -> Classifier:
        """Load a converted Flax folder, or an HF PyTorch folder / Hub id (converted in memory).

        quantize: 'none', or 'int8' (the encoder's dense layers as int8 matmuls, quantized once
        at load: see flaxsent/core/quantize.py). options: max_length, boundaries,
        max_batch_tokens, max_batch_size, devices, precision, backend ('mesh' or 'pmap'),
        window, pack_length.

        runtime='onnxruntime': the folder's ONNX graphs (`flaxsent export SRC DST --format onnx`)
        through ONNX Runtime, with the same plan (packing where the folder has
        model_packed.onnx); there quantize='int8' picks model_quantized.onnx, threads sets ONNX
        Runtime's intra-op threads (default: the usable cores) and providers its execution
        providers, while dtype stays float32 and devices, precision and backend do not apply.
        """
        if runtime not in RUNTIMES:
            raise FlaxsentError(f"runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
        if dtype not in ("float32", "bfloat16"):
            raise FlaxsentError(f"dtype {dtype!r}: choose float32 or bfloat16")
        check_quantize(quantize)  # before anything is read
        if runtime == "onnxruntime":
            return cls._from_onnx(path_or_hub_id, dtype, quantize=quantize, **options)
        if compilation_cache:
            enable_compilation_cache(cache_dir)
        folder = ckpt.resolve_source(path_or_hub_id)
        model = ckpt.load_model(folder, dtype=dtype)
        clf = cls(model, _tokenizer_of(folder), quantize=quantize, **options)
        clf.source = folder
        return clf

    @classmethod
    def _from_onnx(cls, path_or_hub_id: str | Path, dtype: str, *, quantize: str = "none",
                   threads: int | None = None, providers: Sequence[Any] | None = None,
                   **options: Any) -> Classifier:
        """`from_pretrained(..., runtime='onnxruntime')`: an exported folder's graphs."""
        if dtype != "float32":
            raise FlaxsentError(f"dtype {dtype}: the onnxruntime runtime runs the exported "
                                "float32 graphs (or their int8 twins: quantize='int8')")
        folder = ckpt.resolve_source(path_or_hub_id, extra_patterns=ckpt.ONNX_HUB_PATTERNS)
        engine = OnnxEngine.from_folder(folder, quantize=quantize, threads=threads,
                                        providers=providers)
        clf = cls(None, _tokenizer_of(folder), engine=engine, **options)
        clf.source = folder
        return clf

    # ---- public calls -------------------------------------------------------------------

    @property
    def window(self) -> int:
        """Inputs tokenized and batched together: batches never span two windows.

        So the logits of inputs from any multiple of `window` on do not depend on the inputs
        before it: a resumed or sharded run that starts at such a row computes exactly (bit for
        bit) what one uninterrupted run computes for those rows.
        """
        return self._window

    @property
    def compiled_shapes(self) -> list[tuple[int, int, int]]:
        """(rows, length, slots) of every shape compiled so far, in order of first use."""
        return self.engine.compiled_shapes

    @property
    def dtype(self) -> str:
        """The name of the dtype the model computes in ('float32', 'bfloat16')."""
        if self.model is None:
            return self.engine.dtype
        return jnp.dtype(self.model.embeddings.word_embeddings.dtype or jnp.float32).name

    def shapes(self) -> list[tuple[int, int, int]]:
        """Every shape this classifier can compile (`ShapePlan.batch_shapes`): the packed one
        (if on), then the buckets, each at its full rows and its smaller rungs."""
        return [shape.as_tuple() for shape in self.plan.batch_shapes()]

    def warmup(self) -> None:
        """Compile every shape in `shapes()` before real traffic (a dummy batch each)."""
        for batch in self.plan.warmup_batches(self.tokenizer.pad_id):
            np.asarray(self.engine.run(batch))

    def logits(self, texts: Iterable[str], truncation: bool = True) -> np.ndarray:
        """Raw logits, float32 [N, num_labels], in input order."""
        rows = list(self.stream_logits(texts, truncation=truncation))
        return np.stack(rows) if rows else np.zeros((0, self.config.num_labels), np.float32)

    def __call__(self, texts: str | Iterable[str], top_k: int | None = 1,
                 function_to_apply: str | None = None, truncation: bool = True) -> list:
        """Scores like transformers' text-classification pipeline (a str gives a 1-item list)."""
        single = isinstance(texts, str)
        results = list(self.stream([texts] if single else texts, top_k=top_k,
                                   function_to_apply=function_to_apply, truncation=truncation))
        # as the pipeline: one text with several labels asked for gives that text's list
        return results[0] if single and top_k != 1 else results

    def stream(self, texts: Iterable[str], top_k: int | None = 1,
               function_to_apply: str | None = None, truncation: bool = True) -> Iterator[Any]:
        """Pipeline-style results one by one, in input order, with bounded memory."""
        apply = self._score_function(function_to_apply)
        k = self._check_top_k(top_k)
        for row in self.stream_logits(texts, truncation=truncation):
            yield self._format(apply(row), top_k, k)

    def format_scores(self, logits: np.ndarray, top_k: int | None = 1,
                      function_to_apply: str | None = None) -> dict | list[dict]:
        """The pipeline-style result of one logits row [C] (what `stream` yields for it)."""
        apply = self._score_function(function_to_apply)
        return self._format(apply(np.asarray(logits, np.float32)), top_k,
                            self._check_top_k(top_k))

    def stream_logits(self, texts: Iterable[str | None], truncation: bool = True,
                      ) -> Iterator[np.ndarray | None]:
        """Logits [C] per input, in input order; device work overlaps host tokenizing/padding.

        A `None` input (a row that could not be read, say) holds its place: it yields None,
        costs nothing, and keeps later inputs in the windows they would have had. A NaN or inf
        logit raises `NonFiniteLogitsError` naming the input.
        """
        if isinstance(texts, (str, bytes)):
            raise TypeError("texts must be an iterable of str; wrap a single text in a list")
        stats = RunStats()
        self.last_run = stats
        start = time.perf_counter()
        collector = OrderedCollector()
        in_flight: collections.deque = collections.deque()
        batches = (item for window in self._encode(iter(texts), truncation, stats, collector)
                   for item in dispatch(self.engine, self.plan, window, self.tokenizer.pad_id,
                                        self.window))
        for batch, logits in batches:
            in_flight.append((batch, logits))
            stats.n_batches += 1
            stats.real_tokens += batch.real_tokens
            stats.computed_tokens += batch.computed_tokens
            if len(in_flight) > _IN_FLIGHT:
                yield from self._collect(in_flight.popleft(), collector)
        while in_flight:
            yield from self._collect(in_flight.popleft(), collector)
        yield from collector.pop_ready()  # placeholders after the last batch, or with none
        if collector.next_index != stats.n_inputs or collector.pending:
            raise RuntimeError(f"internal error: {stats.n_inputs} input(s) read but "
                               f"{collector.next_index} result(s) returned "
                               f"({collector.pending} held back); please report this")
        stats.seconds = time.perf_counter() - start
        if stats.n_truncated:
            log.info("flaxsent: %d of %d input(s) truncated to %d tokens", stats.n_truncated,
                     stats.n_inputs, self.tokenizer.max_length)

    def explain(self, texts: Sequence[str], *, target: str | int | None = None,
                steps: int = 50, method: str = "integrated-gradients",
                progress: Callable[[int], object] | None = None) -> list[Explanation]:
        """Per-token and per-word attributions of each text's score, in input order.

        target: a label (name or index) explained for every text; None: each text's predicted
        label. method: 'integrated-gradients' over the word embeddings from the [PAD] baseline
        with `steps` Gauss-Legendre points (captum's default rule), or 'gradient-x-input'.
        progress: called with the number of interpolation copies each batch finished. See
        flaxsent/core/attribution.py.
        """
        if self.model is None or self.quantize != "none":
            raise FlaxsentError("explain differentiates the float model: load it with "
                                "runtime='jax' and quantize='none'")
        if method not in METHODS:
            raise FlaxsentError(f"method {method!r}: choose one of {', '.join(METHODS)}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise FlaxsentError(f"steps={steps!r}: must be a positive integer")
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of str; wrap a single text in a list")
        texts = list(texts)
        fixed = None if target is None else self._label_index(target)
        ids, _ = self.tokenizer.encode_batch(texts)
        for i, t in enumerate(ids):
            if len(t) <= 2:
                raise FlaxsentError(f"text {i} is empty: it has no tokens to explain")
        pad = self.tokenizer.pad_id
        ends = list(enumerate(ids)) + [(len(ids) + i, baseline_ids(t, pad))
                                      for i, t in enumerate(ids)]
        collector = OrderedCollector()
        for batch, logits in dispatch(self.engine, self.plan, ends, pad, self.window):
            collector.add(batch.positions, read_back(batch, logits))
        rows = np.stack(collector.pop_ready()) if ids else np.zeros((0, self.config.num_labels))
        check_finite(rows)
        at_text, at_base = rows[:len(ids)], rows[len(ids):]  # [N, C] each
        predicted = np.argmax(at_text, axis=1)
        targets = predicted if fixed is None else np.full(len(ids), fixed)
        if self.attribution_engine is None:
            self.attribution_engine = AttributionEngine(self.model, devices=self.engine.devices,
                                                        precision=self.engine.precision)
        totals = attribute(self.attribution_engine, self.attribution_plan, ids,
                           targets.tolist(), method, steps, pad, progress)
        scores = self._score_function(None)(at_text)
        out = []
        for i, text in enumerate(texts):
            tokens = self.tokenizer.tokens(ids[i])
            words, by_word = words_of(tokens, totals[i])
            t = int(targets[i])
            delta = float(at_text[i, t] - at_base[i, t])
            gap = None
            if method == "integrated-gradients":
                gap = float((totals[i].sum() - delta) / abs(delta)) if delta else \
                    float(totals[i].sum())
            out.append(Explanation(text, tuple(tokens), totals[i], tuple(words), by_word,
                                   self.labels[t], self.labels[int(predicted[i])],
                                   float(scores[i, t]), delta, gap, method, steps))
        return out

    def _label_index(self, label: str | int) -> int:
        """A label's index from its name (case-insensitive) or index."""
        names = [str(x) for x in self.labels]
        if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(names):
            return label
        folded = [n.casefold() for n in names]
        if isinstance(label, str) and label.casefold() in folded:
            return folded.index(label.casefold())
        raise FlaxsentError(f"target {label!r}: the model's labels are {', '.join(names)}")

    # ---- internals ----------------------------------------------------------------------

    def _encode(self, texts: Iterator[str | None], truncation: bool, stats: RunStats,
                collector: OrderedCollector) -> Iterator[list[tuple[int, list[int]]]]:
        """(index, token ids) of every text, one window of inputs at a time, tokenized together
        (Rust, parallel). None inputs go straight to the collector as placeholders, and still
        count in their window: batches are formed per window of inputs, bad rows or not."""
        offset = 0
        while chunk := list(itertools.islice(texts, self.window)):
            real = [i for i, text in enumerate(chunk) if text is not None]
            for i in range(len(chunk)):
                if chunk[i] is None:
                    collector.add_placeholder(offset + i)
            ids, lengths = self.tokenizer.encode_batch([chunk[i] for i in real],
                                                       truncation=truncation, offset=offset)
            stats.n_truncated += int((lengths > self.tokenizer.max_length).sum())
            stats.n_inputs += len(chunk)
            yield list(zip((offset + i for i in real), ids, strict=True))
            offset += len(chunk)

    @staticmethod
    def _collect(item: tuple[Batch, jax.Array], collector: OrderedCollector,
                 ) -> list[np.ndarray | None]:
        batch, logits = item
        rows = read_back(batch, logits)
        check_finite(rows, batch.positions)
        collector.add(batch.positions, rows)
        return collector.pop_ready()

    def _score_function(self, name: str | None):
        if name is None:
            multi = self.config.passthrough.get("problem_type") == "multi_label_classification"
            name = "sigmoid" if self.config.num_labels == 1 or multi else "softmax"
        name = str(getattr(name, "value", name)).lower()
        if name == "softmax":
            return softmax
        if name == "sigmoid":
            return sigmoid
        if name == "none":
            return lambda x: x
        raise ValueError(f"function_to_apply={name!r}: choose one of {', '.join(FUNCTIONS)}")

    def _check_top_k(self, top_k: int | None) -> int:
        if top_k is None:
            return self.config.num_labels
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
        return min(top_k, self.config.num_labels)

    def _format(self, scores: np.ndarray, top_k: int | None, k: int) -> Any:
        if top_k == 1:
            i = int(np.argmax(scores))
            return {"label": self.labels[i], "score": float(scores[i])}
        order = np.argsort(-scores, kind="stable")[:k]
        return [{"label": self.labels[i], "score": float(scores[i])} for i in order]


def _config_of(model: DistilBertForSequenceClassification | None, engine: OnnxEngine | None,
               **jax_options: Any) -> DistilBertConfig:
    """The config of the model, or of an engine that runs without one (the options of the jax
    runtime are then refused: the engine has its own device and precision)."""
    if (model is None) == (engine is None):
        raise FlaxsentError("Classifier takes a model (the jax runtime) or an engine, not "
                            f"{'both' if model is not None else 'neither'}")
    if engine is None:
        return model.config
    for name, value in jax_options.items():
        if value is not None and (name, value) != ("backend", "mesh"):
            raise FlaxsentError(f"{name}: an option of the jax runtime; the {engine.runtime} "
                                "runtime runs on its own device")
    return engine.config


def _tokenizer_of(folder: Path) -> TextTokenizer:
    try:
        return TextTokenizer.from_folder(folder)
    except FileNotFoundError as e:
        raise FlaxsentError(str(e)) from None


# ---- the rules and steps of every run over the engine (Classifier, serve's Batcher, aot) ---

def length_limit(tokenizer: TextTokenizer, config: DistilBertConfig) -> int:
    """The most tokens a text may have: the tokenizer's limit, within the model's positions."""
    return min(tokenizer.model_max_length, config.max_position_embeddings)


def default_precision(dtype: Any) -> str:
    """The matmul precision for weights of `dtype`: exact ('highest') for float32, else the
    hardware's native rate ('default')."""
    return "highest" if jnp.dtype(dtype) == jnp.float32 else "default"


def dispatch(engine: Engine | PmapEngine, plan: ShapePlan,
             items: Iterable[tuple[int, Sequence[int]]], pad_id: int, window: int,
             ) -> Iterator[tuple[Batch, jax.Array]]:
    """The plan's batches of (index, token ids) items, each with its logits as dispatched to
    the device (asynchronously: not read back yet); a batch is dispatched when it is pulled."""
    for batch in plan.batches(items, pad_id, window):
        yield batch, engine.run(batch)


def read_back(batch: Batch, logits: jax.Array) -> np.ndarray:
    """The batch's real texts' logits [n, C] float32 on the host, in `batch.positions` order
    (blocks on this batch only)."""
    return batch.select(np.asarray(logits, dtype=np.float32))


def check_finite(rows: np.ndarray, positions: np.ndarray | None = None) -> None:
    """Raise `NonFiniteLogitsError` for the first input (by position: `positions`, default
    the row's own index) whose logits row [C] of `rows` [N, C] holds NaN or inf."""
    bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
    if bad.size:
        at = np.arange(len(rows)) if positions is None else positions
        first = bad[np.argmin(at[bad])]
        raise NonFiniteLogitsError(int(at[first]), rows[first], bad.size - 1)


def softmax(x: np.ndarray) -> np.ndarray:
    """Probabilities over the last axis, computed stably (max subtracted first)."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Independent per-label probabilities."""
    return 1.0 / (1.0 + np.exp(-x))
