"""What the bench times: PyTorch eager as users run it and at its best, ONNX Runtime as a CPU
user runs it, and flaxsent's plans and runtimes.

A `Strategy` is a name, a dtype, a quantization and (for PyTorch and ONNX Runtime) a batch size;
`make_runner` turns it into a runner with one job:
`run(texts) -> (logits [N, C] float32 in input order, computed tokens)`.
torch, onnxruntime and jax are imported inside the runners, so a probe process loads only what
it measures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from flaxsent.bench.sysinfo import usable_cores, xla_cpu_threads

TORCH_BATCH = 32
# torch-sorted tries each batch size and reports the fastest (PyTorch at its best)
SORTED_BATCHES = (8, 16, 32, 64)
SORTED_BATCHES_GPU = (32, 64, 128, 256)  # a GPU wants larger batches
NAIVE_BATCH = 32
TORCH_NAMES = ("torch-pipeline", "torch-sorted", "torch-compile")
# ONNX Runtime as a CPU user runs it: the HF model exported, BERT-fused (and int8-quantized),
# length-sorted batches (bench/peers.py prepares the files once per run)
ORT_NAMES = ("ort-sorted",)
FLAX_NAMES = ("flax-naive", "flax-bucketed", "flax-mesh-dp", "flax-pmap-dp")  # the JAX engine
FLAX_ORT = "flax-ort"  # flaxsent's ONNX Runtime runtime, through its shape plan
NAMES = TORCH_NAMES + ORT_NAMES + FLAX_NAMES + (FLAX_ORT,)
# float16: PyTorch autocast on a GPU only; flaxsent runs float32 and bfloat16
DTYPES = ("float32", "bfloat16", "float16")
QUANTIZE = (None, "int8")
# int8 rows: flaxsent's JAX engine (flax-bucketed), its ONNX Runtime runtime, ONNX Runtime
INT8_NAMES = ("ort-sorted", "flax-bucketed", FLAX_ORT)
DTYPE_TAGS = {"bfloat16": "bf16", "float16": "fp16"}
ONNX_OPSET = 17
# float32 matmul precision: "highest" is exact (the parity setting); "default" lets the backend
# use reduced-precision passes (TF32 on NVIDIA GPUs, bf16 passes on TPUs)
PRECISIONS = ("highest", "default")
# Events that make up a JAX compile: tracing, lowering to MLIR, and XLA compile (or its cache
# fetch, which the backend-compile event wraps when the persistent cache hits).
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                  "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")


@dataclasses.dataclass(frozen=True)
class Strategy:
    """One way of running the model over the corpus."""

    name: str
    dtype: str = "float32"
    batch_size: int | None = None  # PyTorch and ONNX Runtime strategies only
    precision: str = "highest"  # float32 flaxsent only: matmul precision
    quantize: str | None = None  # "int8": weights (and activations) in int8

    def __post_init__(self) -> None:
        if self.name not in NAMES:
            raise ValueError(f"unknown strategy {self.name!r}; choose from {', '.join(NAMES)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r}: choose float32 or bfloat16")
        if self.dtype == "float16" and self.family != "torch":
            raise ValueError(f"{self.name}: float16 is a PyTorch (autocast) dtype only")
        if self.dtype != "float32" and self.name in ORT_NAMES + (FLAX_ORT,):
            raise ValueError(f"{self.name}: ONNX Runtime rows run float32 or int8")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: choose highest or default")
        if self.quantize not in QUANTIZE:
            raise ValueError(f"quantize {self.quantize!r}: choose None or 'int8'")
        if self.quantize and (self.name not in INT8_NAMES or self.dtype != "float32"):
            raise ValueError(f"{self.name}: int8 runs only for {', '.join(INT8_NAMES)}, from "
                             "float32")

    @property
    def key(self) -> str:
        """Unique label: the name, with [bf16] / [fp16] for bfloat16 / float16, [int8] for
        int8 and [default-prec] for fast fp32."""
        if self.quantize:
            return f"{self.name}[{self.quantize}]"
        if self.dtype in DTYPE_TAGS:
            return f"{self.name}[{DTYPE_TAGS[self.dtype]}]"
        return self.name if self.precision == "highest" else f"{self.name}[default-prec]"

    @property
    def family(self) -> str:
        """'torch', 'ort' (ONNX Runtime as users run it) or 'flax' (flaxsent, either runtime)."""
        if self.name in TORCH_NAMES:
            return "torch"
        return "ort" if self.name in ORT_NAMES else "flax"

    @property
    def jax(self) -> bool:
        """Runs through JAX (compiles, and a persistent compilation cache to probe)."""
        return self.name in FLAX_NAMES

    @property
    def sweeps_batches(self) -> bool:
        """Timed at each batch size of the sweep, the fastest kept (PyTorch / ORT at best)."""
        return self.name in ("torch-sorted",) + ORT_NAMES

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class RunContext:
    """What every runner needs to know besides its strategy."""

    torch_folder: str  # HF PyTorch folder (the PyTorch side, and the reference)
    flax_folder: str  # what flaxsent loads: the same folder, or a perturbed converted copy
    naive_length: int  # flax-naive pads everything to this (the corpus's longest input)
    dp_devices: int | None = None  # data-parallel strategies: first N local devices (None: all)
    cache_dir: str | None = None  # JAX persistent compilation cache; None: leave it off
    # threads for each side (PyTorch's intra-op threads, XLA's CPU pool, ONNX Runtime's
    # intra-op threads): the same for all
    threads: int = dataclasses.field(default_factory=usable_cores)
    # ort-sorted's model files, by quantization ("none", "int8"): bench/peers.py writes them
    ort_models: dict[str, str] | None = None
    ort_provider: str = "CPUExecutionProvider"
    flax_onnx_folder: str | None = None  # flax-ort: what `flaxsent export --format onnx` wrote

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def describe(strategy: Strategy, n_devices: int | None = None, naive_length: int | None = None,
             ) -> str:
    """One line saying what the strategy does, for the reports."""
    name, bs = strategy.name, strategy.batch_size
    devices = f"{n_devices} device(s)" if n_devices else "all local devices"
    int8 = strategy.quantize == "int8"
    autocast = f"torch.autocast({DTYPE_TAGS.get(strategy.dtype)}), " \
        if strategy.family == "torch" and strategy.dtype != "float32" else ""
    text = {
        "torch-pipeline": f"PyTorch eager, batches of {bs} in input order, each padded to its "
                          "longest (as users run it)",
        "torch-sorted": f"PyTorch eager, {autocast}length-sorted batches of {bs}, each padded to "
                        "its longest",
        "torch-compile": f"torch.compile, length-sorted batches of {bs}",
        "ort-sorted": "ONNX Runtime, the HF model through torch.onnx.export (opset "
                      f"{ONNX_OPSET}) and onnxruntime.transformers' BERT fusion"
                      + (", then quantize_dynamic (int8 weights, dynamic int8 activations)"
                         if int8 else "")
                      + f", ORT_ENABLE_ALL, length-sorted batches of {bs}, each padded to its "
                        "longest",
        "flax-naive": f"flaxsent, every input padded to {naive_length} tokens, batches of "
                      f"{NAIVE_BATCH}, one compiled shape",
        "flax-bucketed": "flaxsent default plan, 1 device"
                         + (", int8 dense layers (quantize='int8')" if int8 else ""),
        "flax-mesh-dp": f"flaxsent default plan, jit + NamedSharding over {devices}",
        "flax-pmap-dp": f"flaxsent default plan, pmap over {devices}",
        FLAX_ORT: "flaxsent's ONNX Runtime runtime (runtime='onnxruntime"
                  + ("', quantize='int8'" if int8 else "'") + ") through its shape plan, on the "
                  "folder `flaxsent export --format onnx --quantize int8` wrote",
    }[name]
    return text


class CompileMeter:
    """Counts and times JAX compiles in this process (via jax.monitoring), for honest timings."""

    _instance: CompileMeter | None = None

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0

    @classmethod
    def get(cls) -> CompileMeter:
        """The process-wide meter, registered with jax.monitoring on first use."""
        if cls._instance is None:
            import jax.monitoring
            meter = cls()
            jax.monitoring.register_event_duration_secs_listener(meter._on_event)
            cls._instance = meter
        return cls._instance

    def _on_event(self, event: str, duration: float, **_: Any) -> None:
        if event in COMPILE_EVENTS:
            self.seconds += duration
            if event == COMPILE_EVENTS[-1]:
                self.count += 1


# ---- PyTorch ------------------------------------------------------------------------------


def sorted_batches(tokenizer: Any, texts: Sequence[str], batch_size: int, tensors: str):
    """(caller indices, {input_ids, attention_mask}) per batch of length-sorted texts, each
    batch padded to its longest: PyTorch's and ONNX Runtime's way at their best.

    tensors: 'pt' (torch tensors) or 'np' (int64 arrays, as ONNX Runtime takes them).
    """
    ids = tokenizer(list(texts), truncation=True)["input_ids"]
    order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        enc = tokenizer.pad({"input_ids": [ids[i] for i in rows]}, padding=True,
                            return_tensors=tensors)
        batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if tensors == "np":
            batch = {k: np.asarray(v, np.int64) for k, v in batch.items()}
        yield rows, batch


class TorchRunner:
    """PyTorch eager (or torch.compile): pipeline-style input-order batches, or length-sorted."""

    def __init__(self, strategy: Strategy, ctx: RunContext):
        import torch
        import transformers
        torch.set_num_threads(ctx.threads)
        self.strategy = strategy
        self.torch = torch
        self.batch_size = strategy.batch_size or TORCH_BATCH
        self.sort = strategy.name != "torch-pipeline"
        # where users would run it: the GPU when PyTorch sees one (a TPU host runs it on CPU)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32: the reference
        # bf16 / fp16: mixed precision as users run it, torch.autocast over the fp32 model
        self.autocast = None if strategy.dtype == "float32" else getattr(torch, strategy.dtype)
        self.model = transformers.AutoModelForSequenceClassification.from_pretrained(
            ctx.torch_folder).eval().to(self.device)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(ctx.torch_folder)
        self.forward = self.model
        if strategy.name == "torch-compile":
            self.forward = torch.compile(self.model, dynamic=True)
        self.n_devices = 1

    @property
    def threads(self) -> int:
        """PyTorch's intra-op threads, as it reports them."""
        return self.torch.get_num_threads()

    def run(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """Logits [N, C] in input order, and the tokens computed (rows x padded length)."""
        texts = list(texts)
        out: list[np.ndarray | None] = [None] * len(texts)
        computed = 0
        torch = self.torch
        with torch.inference_mode(), \
                torch.autocast(self.device, dtype=self.autocast or torch.bfloat16,
                               enabled=self.autocast is not None):
            for rows, enc in self._batches(texts):
                enc = {k: v.to(self.device) for k, v in enc.items()}
                logits = self.forward(**enc).logits  # [b, C]
                computed += int(enc["input_ids"].numel())
                for i, row in zip(rows, logits.float().cpu().numpy(), strict=True):
                    out[i] = row
        return np.stack(out).astype(np.float32), computed

    def _batches(self, texts: list[str]):
        """(caller indices, padded tensors) per batch."""
        bs = self.batch_size
        if not self.sort:  # the transformers pipeline's way: tokenize and pad batch by batch
            for start in range(0, len(texts), bs):
                chunk = texts[start:start + bs]
                enc = self.tokenizer(chunk, padding=True, truncation=True, return_tensors="pt")
                yield range(start, start + len(chunk)), {"input_ids": enc["input_ids"],
                                                     "attention_mask": enc["attention_mask"]}
            return
        yield from sorted_batches(self.tokenizer, texts, bs, "pt")

    def device_peak_mb(self) -> float | None:
        """Peak GPU memory PyTorch allocated (None on CPU)."""
        if self.device != "cuda":
            return None
        return self.torch.cuda.max_memory_allocated() / 2**20

    def heaviest_batch(self, texts: Sequence[str], lengths: Sequence[int]) -> list[str]:
        """The texts of the batch that computes the most tokens (its memory high-water mark)."""
        bs = self.batch_size
        idx = list(range(len(texts)))
        if self.sort:
            idx.sort(key=lambda i: lengths[i])
        chunks = [idx[s:s + bs] for s in range(0, len(idx), bs)]
        best = max(chunks, key=lambda c: len(c) * max(lengths[i] for i in c))
        return [texts[i] for i in best]

    def warmup_texts(self, texts: Sequence[str], lengths: Sequence[int]) -> list[str]:
        """Eager PyTorch compiles nothing: warm up on the heaviest batch (allocator, threads)."""
        if self.strategy.name == "torch-compile":
            return list(texts)  # every batch shape once: dynamic shapes still specialise some
        return self.heaviest_batch(texts, lengths)


# ---- ONNX Runtime --------------------------------------------------------------------------


class OrtRunner:
    """ONNX Runtime as a CPU user runs it: one InferenceSession over the prepared model file
    (bench/peers.py), length-sorted batches padded to their longest, int64 inputs."""

    def __init__(self, strategy: Strategy, ctx: RunContext):
        import onnxruntime as ort
        import transformers
        if not ctx.ort_models:
            raise RuntimeError("no ONNX model prepared for ort-sorted (bench/peers.py)")
        self.strategy = strategy
        self.batch_size = strategy.batch_size or TORCH_BATCH
        self.path = ctx.ort_models[strategy.quantize or "none"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = ctx.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only
        self.session = ort.InferenceSession(self.path, options, providers=[ctx.ort_provider])
        self.provider = self.session.get_providers()[0]
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(ctx.torch_folder)
        self._threads = ctx.threads
        self.n_devices = 1

    @property
    def device(self) -> str:
        return "cuda" if self.provider == "CUDAExecutionProvider" else "cpu"

    @property
    def threads(self) -> int:
        """The intra-op threads the session was given (ONNX Runtime does not report its pool)."""
        return self._threads

    def run(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """Logits [N, C] in input order, and the tokens computed (rows x padded length)."""
        texts = list(texts)
        out = None
        computed = 0
        for rows, feeds in sorted_batches(self.tokenizer, texts, self.batch_size, "np"):
            logits = self.session.run(["logits"], feeds)[0]  # [b, C]
            if out is None:
                out = np.empty((len(texts), logits.shape[1]), np.float32)
            out[rows] = logits
            computed += int(feeds["input_ids"].size)
        return out, computed

    def device_peak_mb(self) -> float | None:
        return None

    def heaviest_batch(self, texts: Sequence[str], lengths: Sequence[int]) -> list[str]:
        idx = sorted(range(len(texts)), key=lambda i: lengths[i])
        bs = self.batch_size
        chunks = [idx[s:s + bs] for s in range(0, len(idx), bs)]
        best = max(chunks, key=lambda c: len(c) * max(lengths[i] for i in c))
        return [texts[i] for i in best]

    def warmup_texts(self, texts: Sequence[str], lengths: Sequence[int]) -> list[str]:
        """As for PyTorch eager: nothing compiles; the heaviest batch (allocator, threads)."""
        return self.heaviest_batch(texts, lengths)


# ---- flaxsent -----------------------------------------------------------------------------


class FlaxRunner:
    """A flaxsent `Classifier` built as the strategy says; the public API only."""

    def __init__(self, strategy: Strategy, ctx: RunContext):
        from flaxsent.core.classifier import Classifier
        self.strategy = strategy
        if strategy.name == "flax-naive":
            from flaxsent.core import checkpoint as ckpt
            from flaxsent.core.engine import enable_compilation_cache
            from flaxsent.core.tokenizer import TextTokenizer
            if ctx.cache_dir:
                enable_compilation_cache(ctx.cache_dir)
            model = ckpt.load_model(Path(ctx.flax_folder), dtype=strategy.dtype)
            tokenizer = TextTokenizer.from_folder(ctx.flax_folder)
            length = ctx.naive_length
            # naive means plain padding to one shape: no buckets, no packing
            self.clf = Classifier(model, tokenizer, boundaries=[length], max_length=length,
                                  max_batch_size=NAIVE_BATCH,
                                  max_batch_tokens=NAIVE_BATCH * length, devices=1,
                                  pack_length=None, rungs=1)
        elif strategy.name == FLAX_ORT:
            # a thin use of the public API: the exported folder, flaxsent's ORT runtime
            if not ctx.flax_onnx_folder:
                raise RuntimeError("no folder exported with `flaxsent export --format onnx`")
            options: dict[str, Any] = {"runtime": "onnxruntime", "threads": ctx.threads}
            if strategy.quantize:
                options["quantize"] = strategy.quantize
            self.clf = Classifier.from_pretrained(ctx.flax_onnx_folder, **options)
        else:
            devices = 1 if strategy.name == "flax-bucketed" else ctx.dp_devices
            backend = "pmap" if strategy.name == "flax-pmap-dp" else "mesh"
            precision = "default" if strategy.dtype == "bfloat16" else strategy.precision
            options = {"quantize": strategy.quantize} if strategy.quantize else {}
            self.clf = Classifier.from_pretrained(
                ctx.flax_folder, dtype=strategy.dtype, compilation_cache=bool(ctx.cache_dir),
                cache_dir=ctx.cache_dir, devices=devices, backend=backend, precision=precision,
                **options)
        self.n_devices = int(self.clf.engine.n_devices)
        self._threads = ctx.threads

    @property
    def plan(self):
        return self.clf.plan

    @property
    def device(self) -> str:
        """Where flaxsent runs: 'cpu', 'gpu' or 'tpu' (its ONNX Runtime runtime: 'cpu')."""
        if not self.strategy.jax:
            return "cpu"
        import jax
        return jax.default_backend()

    @property
    def threads(self) -> int | None:
        """XLA's CPU intra-op threads as running (None off the CPU, or where they can't be seen).

        XLA sizes its pool once, when jax starts: the bench and its probes set it before.
        (flax-ort: the intra-op threads ONNX Runtime was given; it does not report its pool.)
        """
        if not self.strategy.jax:
            return self._threads
        return xla_cpu_threads() if self.device == "cpu" else None

    def device_peak_mb(self) -> float | None:
        """Peak accelerator memory of the first device, where the backend reports it."""
        devices = getattr(getattr(self.clf, "engine", None), "devices", None) or []
        try:
            stats = devices[0].memory_stats() if devices else None
        except Exception:  # noqa: BLE001 - backends without memory stats raise various errors
            stats = None
        peak = (stats or {}).get("peak_bytes_in_use")
        return None if peak is None else peak / 2**20

    def run(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """Logits [N, C] in input order (already on the host), and the tokens computed."""
        logits = np.asarray(self.clf.logits(texts), dtype=np.float32)
        return logits, int(self.clf.last_run.computed_tokens)

    def warmup_texts(self, texts: Sequence[str], lengths: Sequence[int]) -> list[str]:
        """The whole corpus: exactly the shapes a timed pass runs, each shape's last batch at
        the rung of rows it takes (a smaller set of texts would compile other rungs)."""
        return list(texts)

    def heaviest_batch(self, texts: Sequence[str], lengths: Sequence[int]) -> list[str]:
        # the corpus's batches at full rows and their last ones at their rungs: all of them
        return self.warmup_texts(texts, lengths)


def make_runner(strategy: Strategy, ctx: RunContext) -> TorchRunner | OrtRunner | FlaxRunner:
    """Load the model the strategy runs (PyTorch, ONNX Runtime or flaxsent)."""
    if strategy.family == "torch":
        return TorchRunner(strategy, ctx)
    if strategy.family == "ort":
        return OrtRunner(strategy, ctx)
    return FlaxRunner(strategy, ctx)
