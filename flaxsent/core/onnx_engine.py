"""ONNX Runtime as an engine: a folder's exported graphs run through the same shape plan.

`flaxsent export SRC DST --format onnx` writes two graphs (see `convert/onnx_export.py`):

- `model.onnx`, Hugging Face's interface: input_ids and attention_mask, int64 [batch, sequence],
  to logits float32 [batch, num_labels] (what ONNX Runtime and Optimum load);
- `model_packed.onnx`, the engine's forward (`model.packed_logits`): ids, segments and
  positions [B, L] and [CLS] columns [B, S] to logits [B, S, C].

`OnnxEngine` has what `Classifier` and serve's batcher use of `engine.Engine`: `run(batch)`,
`n_devices`, `devices[0].platform`, `precision`, `config` and `compiled_shapes`. Packed batches
run through the packed graph; buckets (one text a row) through the standard one, with the
attention mask from the segment ids, so a foreign `model.onnx` with only the standard
interface runs too (bucketed: the classifier turns packing off). `run` hands the batch to the
engine's one worker thread and returns at once; reading the result (`np.asarray`) waits for it,
so the host tokenizes and packs while ONNX Runtime computes, as with JAX's async dispatch.

onnxruntime is imported only when an engine is built (the `onnx` extra).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flaxsent.core import checkpoint as ckpt
from flaxsent.core.config import DistilBertConfig
from flaxsent.core.plan import Batch
from flaxsent.errors import CheckpointError, FlaxsentError

QUANTIZATIONS = ("none", "int8")  # as Classifier's quantize
STANDARD_INPUTS = ("input_ids", "attention_mask")
PACKED_INPUTS = ("input_ids", "segment_ids", "position_ids", "cls_index")
OUTPUT = "logits"
# the graph files of each quantization: (standard, packed)
GRAPH_FILES = {"none": (ckpt.ONNX_MODEL, ckpt.ONNX_PACKED),
               "int8": (ckpt.ONNX_QUANTIZED, ckpt.ONNX_PACKED_QUANTIZED)}
_INT_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


def import_onnxruntime() -> Any:
    """onnxruntime, or a one-line error naming the extra that installs it."""
    try:
        import onnxruntime
    except ImportError:
        raise FlaxsentError("the onnxruntime runtime needs ONNX Runtime: "
                            "pip install 'flaxsent[onnx]'") from None
    return onnxruntime


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclasses.dataclass(frozen=True)
class RuntimeDevice:
    """What the plan and the reports read of a device: its platform ('cpu' or 'gpu', which picks
    the batch budget) and the ONNX Runtime execution provider that runs the graphs."""

    platform: str
    provider: str

    def memory_stats(self) -> None:
        """ONNX Runtime reports no device memory statistics (JAX devices do)."""
        return None

    def __str__(self) -> str:
        return f"onnxruntime:{self.provider}"


class _Pending:
    """Logits being computed on the engine's thread; `np.asarray` (read-back) waits for them."""

    __slots__ = ("_future",)

    def __init__(self, future: concurrent.futures.Future):
        self._future = future

    def result(self) -> np.ndarray:
        return self._future.result()

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self._future.result()
        return out if dtype is None else out.astype(dtype, copy=False)


class _Graph:
    """One ONNX Runtime session and the integer type each of its inputs takes."""

    def __init__(self, ort: Any, path: Path, options: Any, providers: list,
                 expected: Sequence[str], rank: int, config: DistilBertConfig):
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as e:  # noqa: BLE001 - ORT raises its own types for unreadable graphs
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"{path}: ONNX Runtime cannot load it ({reason})") from None
        inputs = {i.name: i for i in self.session.get_inputs()}
        if set(inputs) != set(expected):
            raise CheckpointError(
                f"{path}: inputs {sorted(inputs)}; flaxsent runs graphs with exactly "
                f"{', '.join(expected)}")
        self.types = {}
        for name in expected:
            if inputs[name].type not in _INT_TYPES or len(inputs[name].shape) != 2:
                raise CheckpointError(f"{path}: input {name} is {inputs[name].type} of rank "
                                      f"{len(inputs[name].shape)}, not int64 (or int32) "
                                      "[batch, length]")
            self.types[name] = _INT_TYPES[inputs[name].type]
        outputs = self.session.get_outputs()
        named = [o for o in outputs if o.name == OUTPUT]
        output = named[0] if named else outputs[0] if len(outputs) == 1 else None
        if output is None:
            raise CheckpointError(f"{path}: no output named {OUTPUT!r} among "
                                  f"{[o.name for o in outputs]}")
        last = output.shape[-1] if output.shape else None
        if len(output.shape) != rank or (isinstance(last, int) and last != config.num_labels):
            raise CheckpointError(f"{path}: output {output.name} has shape {output.shape}; "
                                  f"expected rank {rank} ending in num_labels = "
                                  f"{config.num_labels} (config.json)")
        self.output = output.name

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        cast = {name: np.ascontiguousarray(a, dtype=self.types[name]) for name, a in feeds.items()}
        return self.session.run([self.output], cast)[0]


class OnnxEngine:
    """The folder's ONNX graphs through ONNX Runtime, with the interface of `engine.Engine`.

    One device (the session's execution provider); every distinct batch shape is recorded at
    its first run in `compiled_shapes` (ONNX Runtime compiles nothing per shape, but the plan's
    shapes are the same set).
    """

    runtime = "onnxruntime"

    def __init__(self, config: DistilBertConfig, standard: Path, packed: Path | None = None, *,
                 quantize: str = "none", threads: int | None = None,
                 providers: Sequence[Any] | None = None):
        ort = import_onnxruntime()
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or threads < 1):
            raise FlaxsentError(f"threads={threads!r}: must be a positive number of threads")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = threads or usable_cores()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: no warnings about unused initializers
        chosen = list(providers) if providers is not None else default_providers(ort)
        self.config = config
        self.quantize = quantize
        self.threads = options.intra_op_num_threads
        self._standard = _Graph(ort, standard, options, chosen, STANDARD_INPUTS, 2, config)
        self._packed = None if packed is None else \
            _Graph(ort, packed, options, chosen, PACKED_INPUTS, 3, config)
        provider = self._standard.session.get_providers()[0]
        self.devices = [RuntimeDevice("cpu" if provider == "CPUExecutionProvider" else "gpu",
                                      provider)]
        # float matmuls are computed in float32 ('highest', the JAX engine's exact default); an
        # int8 graph's quantized matmuls are int8 x int8 -> int32 (`quantize`)
        self.precision = "highest"
        self.dtype = "float32"
        self.files = [standard.name] + ([packed.name] if packed is not None else [])
        self._seen: dict[tuple[int, int, int], None] = {}  # insertion-ordered
        self._worker = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="flaxsent-onnxruntime")

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, *, quantize: str | None = "none",
                    threads: int | None = None,
                    providers: Sequence[Any] | None = None) -> OnnxEngine:
        """The engine of an exported folder: its config.json, `model.onnx` and, when present,
        `model_packed.onnx` (`quantize='int8'`: `model_quantized.onnx` and its packed twin);
        the graphs may lie in an `onnx/` subfolder instead, as Optimum's exports put them."""
        quantize = "none" if quantize is None else quantize
        if quantize not in GRAPH_FILES:
            raise FlaxsentError(f"quantize={quantize!r}: choose one of "
                                f"{', '.join(QUANTIZATIONS)}")
        folder = Path(folder)
        config = ckpt.read_config(folder)
        standard_name, packed_name = GRAPH_FILES[quantize]
        graphs = folder
        if not (folder / standard_name).is_file() and (folder / "onnx" / standard_name).is_file():
            graphs = folder / "onnx"  # Optimum's and Transformers.js's layout
        standard = graphs / standard_name
        if not standard.is_file():
            how = " --quantize int8" if quantize != "none" else ""
            raise CheckpointError(f"{folder}: no {standard_name} (the onnxruntime runtime runs "
                                  f"an ONNX export: flaxsent export SRC DST --format onnx{how})")
        packed = graphs / packed_name
        return cls(config, standard, packed if packed.is_file() else None, quantize=quantize,
                   threads=threads, providers=providers)

    @property
    def packs(self) -> bool:
        """Whether the folder has the packed graph (else the plan runs buckets only)."""
        return self._packed is not None

    @property
    def n_devices(self) -> int:
        return len(self.devices)

    @property
    def compiled_shapes(self) -> list[tuple[int, int, int]]:
        """(rows, length, slots) of every shape run so far, in order of first use."""
        return list(self._seen)

    @property
    def n_compilations(self) -> int:
        """Distinct shapes run (ONNX Runtime plans each shape at its first run)."""
        return len(self._seen)

    def run(self, batch: Batch) -> _Pending:
        """Start one batch of the plan; its logits [B, S, C] float32 when read (`np.asarray`)."""
        shape = batch.shape
        if shape.packed and self._packed is None:
            raise FlaxsentError(f"a packed batch ({shape}) but {self.files[0]} has no packed "
                                "twin: build the classifier with pack_length=None")
        self._seen.setdefault(shape.as_tuple(), None)
        return _Pending(self._worker.submit(self._compute, batch))

    def _compute(self, batch: Batch) -> np.ndarray:
        if batch.shape.packed:
            out = self._packed(dict(zip(PACKED_INPUTS, batch.arrays(), strict=True)))
        else:  # one text a row: HF's interface, the mask from the segments (positions 0..L-1)
            out = self._standard({"input_ids": batch.input_ids,
                                  "attention_mask": batch.segment_ids > 0})[:, None]  # [B,1,C]
        return np.asarray(out, np.float32)


def default_providers(ort: Any) -> list:
    """CUDA where this onnxruntime build has it (TF32 off: float32 stays exact), else the CPU."""
    if "CUDAExecutionProvider" in ort.get_available_providers():
        return [("CUDAExecutionProvider", {"use_tf32": 0}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]
