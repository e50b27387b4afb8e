"""The compiled predict: one pure forward, jitted once per (batch, length) shape, data-parallel."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from .buckets import Batch
from .errors import FlaxsentError
from .model import DistilBertForSequenceClassification
from .packing import PackedBatch

PRECISIONS = ("default", "high", "highest")
DEFAULT_CACHE_DIR = Path(os.environ.get("FLAXSENT_CACHE_DIR",
                                        Path.home() / ".cache" / "flaxsent" / "jax"))
_cache_lock = threading.Lock()


def forward(model: DistilBertForSequenceClassification, input_ids: jax.Array,
            attention_mask: jax.Array) -> jax.Array:
    """The one pure function the engine compiles: ids [B, L], mask [B, L] -> logits [B, C]."""
    return model(input_ids, attention_mask)


def packed_forward(model: DistilBertForSequenceClassification, input_ids: jax.Array,
                   segment_ids: jax.Array, position_ids: jax.Array,
                   cls_index: jax.Array) -> jax.Array:
    """Its packed twin: [B, L] ids, segments, positions and [B, S] [CLS] columns -> [B, S, C]."""
    return model.packed_logits(input_ids, segment_ids, position_ids, cls_index)


def enable_compilation_cache(cache_dir: str | os.PathLike | None = None) -> Path:
    """Turn on JAX's persistent compilation cache (process-wide) so later processes start warm."""
    path = Path(cache_dir).expanduser() if cache_dir else DEFAULT_CACHE_DIR
    with _cache_lock:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise FlaxsentError(f"compilation cache folder {path}: {e.strerror or e}") from None
        jax.config.update("jax_compilation_cache_dir", str(path))
        # Cache every executable: CPU compiles are short but add up over buckets.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def resolve_devices(devices: int | Sequence[jax.Device] | None = None) -> list[jax.Device]:
    """All local devices (None), the first n (an int), or exactly the given ones."""
    local = jax.local_devices()
    if devices is None:
        return local
    if isinstance(devices, int) and not isinstance(devices, bool):
        if not 1 <= devices <= len(local):
            raise FlaxsentError(f"devices={devices}: this host has {len(local)} local device(s)")
        return local[:devices]
    chosen = list(devices)
    if not chosen:
        raise FlaxsentError("devices: an empty device list")
    return chosen


def _check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise FlaxsentError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    return precision


class _CompiledForward:
    """What both engines share: devices, precision, the record of traced shapes, warm-up."""

    def __init__(self, model: DistilBertForSequenceClassification,
                 devices: int | Sequence[jax.Device] | None, precision: str):
        self.devices = resolve_devices(devices)
        self.precision = _check_precision(precision)
        self.config = model.config
        self._traced: list[tuple[int, ...]] = []  # appended at trace time only

    @property
    def n_devices(self) -> int:
        return len(self.devices)

    @property
    def compiled_shapes(self) -> list[tuple[int, ...]]:
        """Shapes compiled so far, in order of first use: (B, L) padded, (B, L, S) packed."""
        return list(self._traced)

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> jax.Array:
        raise NotImplementedError

    def warmup(self, shapes: Sequence[tuple[int, int]]) -> None:
        """Compile the given padded (batch, length) shapes ahead of the first real batch."""
        for b, length in shapes:
            ids = np.zeros((b, length), np.int32)
            self(ids, np.ones_like(ids)).block_until_ready()


class Engine(_CompiledForward):
    """The model's forward, jitted over a 1-axis ('data',) mesh: params replicated, batch sharded.

    Calls dispatch asynchronously and return a device array; every distinct (batch, length)
    shape compiles once and is recorded in `compiled_shapes`.
    """

    def __init__(self, model: DistilBertForSequenceClassification, *,
                 devices: int | Sequence[jax.Device] | None = None,
                 precision: str = "highest"):
        super().__init__(model, devices, precision)
        self.mesh = Mesh(np.asarray(self.devices), ("data",))
        self._replicated = NamedSharding(self.mesh, P())
        self._batch = NamedSharding(self.mesh, P("data"))
        graphdef, state = nnx.split(model)
        self._state = jax.device_put(state, self._replicated)

        def pure_forward(state, input_ids, attention_mask):  # [B, L], [B, L] -> [B, C]
            self._traced.append(tuple(input_ids.shape))  # runs at trace time only
            return forward(nnx.merge(graphdef, state), input_ids, attention_mask)

        self._jitted = jax.jit(pure_forward,
                               in_shardings=(self._replicated, self._batch, self._batch),
                               out_shardings=self._batch)

        def pure_packed(state, input_ids, segment_ids, position_ids, cls_index):
            self._traced.append((*input_ids.shape, cls_index.shape[1]))  # (B, L, S)
            return packed_forward(nnx.merge(graphdef, state), input_ids, segment_ids,
                                  position_ids, cls_index)

        self._jitted_packed = jax.jit(pure_packed,
                                      in_shardings=(self._replicated, *[self._batch] * 4),
                                      out_shardings=self._batch)

    @property
    def n_compilations(self) -> int:
        """Executables in the jit caches: len(compiled_shapes) unless something recompiled."""
        return self._jitted._cache_size() + self._jitted_packed._cache_size()

    def run(self, batch: Batch | PackedBatch) -> jax.Array:
        """Dispatch a padded or a packed batch; logits [B, C] or [B, S, C] (asynchronously)."""
        if isinstance(batch, PackedBatch):
            arrays = (batch.input_ids, batch.segment_ids, batch.position_ids, batch.cls_index)
            placed = [jax.device_put(a, self._batch) for a in arrays]
            with jax.default_matmul_precision(self.precision):
                return self._jitted_packed(self._state, *placed)
        return self(batch.input_ids, batch.attention_mask)

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> jax.Array:
        """Dispatch one padded batch (rows: a multiple of the devices); returns logits [B, C]."""
        if input_ids.shape[0] % self.n_devices:
            raise ValueError(f"batch of {input_ids.shape[0]} rows does not split over "
                             f"{self.n_devices} devices")
        ids = jax.device_put(np.asarray(input_ids, np.int32), self._batch)
        mask = jax.device_put(np.asarray(attention_mask, np.int32), self._batch)
        with jax.default_matmul_precision(self.precision):
            return self._jitted(self._state, ids, mask)


class PmapEngine(_CompiledForward):
    """The same forward through `jax.pmap` (one replica per device); a thin entry point.

    `jax.pmap` is in maintenance mode: the mesh `Engine` is the main path; this one exists
    for users and benchmarks that want pmap, and is tested to give identical logits.
    """

    def __init__(self, model: DistilBertForSequenceClassification, *,
                 devices: int | Sequence[jax.Device] | None = None,
                 precision: str = "highest"):
        super().__init__(model, devices, precision)
        graphdef, state = nnx.split(model)
        n = len(self.devices)
        # one copy per device along a leading axis, laid out as pmap expects its inputs
        stacked = NamedSharding(Mesh(np.asarray(self.devices), ("replica",)), P("replica"))
        self._state = jax.tree.map(
            lambda x: jax.device_put(np.broadcast_to(np.asarray(x), (n, *x.shape)), stacked), state)

        def replica_forward(state, input_ids, attention_mask):  # [b, L] per device
            self._traced.append((input_ids.shape[0] * n, input_ids.shape[1]))
            return forward(nnx.merge(graphdef, state), input_ids, attention_mask)

        self._pmapped = jax.pmap(replica_forward, devices=self.devices)

        def replica_packed(state, input_ids, segment_ids, position_ids, cls_index):
            self._traced.append((input_ids.shape[0] * n, input_ids.shape[1], cls_index.shape[1]))
            return packed_forward(nnx.merge(graphdef, state), input_ids, segment_ids,
                                  position_ids, cls_index)

        self._pmapped_packed = jax.pmap(replica_packed, devices=self.devices)

    def run(self, batch: Batch | PackedBatch) -> jax.Array:
        """Dispatch a padded or a packed batch; logits [B, C] or [B, S, C]."""
        if not isinstance(batch, PackedBatch):
            return self(batch.input_ids, batch.attention_mask)
        n = self.n_devices
        arrays = (batch.input_ids, batch.segment_ids, batch.position_ids, batch.cls_index)
        split = [a.reshape(n, a.shape[0] // n, *a.shape[1:]) for a in arrays]  # [n, B/n, ...]
        with jax.default_matmul_precision(self.precision):
            out = self._pmapped_packed(self._state, *split)  # [n, B/n, S, C]
        return out.reshape(batch.input_ids.shape[0], *out.shape[2:])

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> jax.Array:
        """Logits [B, C] of a batch whose rows split evenly over the devices."""
        b, length = input_ids.shape
        n = self.n_devices
        if b % n:
            raise ValueError(f"batch of {b} rows does not split over {n} devices")
        ids = np.asarray(input_ids, np.int32).reshape(n, b // n, length)  # [n, B/n, L]
        mask = np.asarray(attention_mask, np.int32).reshape(n, b // n, length)
        with jax.default_matmul_precision(self.precision):
            out = self._pmapped(self._state, ids, mask)  # [n, B/n, C]
        return out.reshape(b, -1)


def pmap_predict(model: DistilBertForSequenceClassification, input_ids: np.ndarray,
                 attention_mask: np.ndarray | None = None, *,
                 devices: int | Sequence[jax.Device] | None = None,
                 precision: str = "highest") -> np.ndarray:
    """Logits [B, C] through `jax.pmap`; rows are padded to a multiple of the device count."""
    engine = PmapEngine(model, devices=devices, precision=precision)
    return _padded_call(engine, input_ids, attention_mask)


def mesh_predict(model: DistilBertForSequenceClassification, input_ids: np.ndarray,
                 attention_mask: np.ndarray | None = None, *,
                 devices: int | Sequence[jax.Device] | None = None,
                 precision: str = "highest") -> np.ndarray:
    """Logits [B, C] through the jit + NamedSharding engine, for one ad-hoc batch."""
    engine = Engine(model, devices=devices, precision=precision)
    return _padded_call(engine, input_ids, attention_mask)


def _padded_call(engine: Engine | PmapEngine, input_ids, attention_mask) -> np.ndarray:
    ids = np.asarray(input_ids)
    mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask)
    b = ids.shape[0]
    rows = -(-b // engine.n_devices) * engine.n_devices
    if rows != b:  # filler rows: pad ids, mask on [CLS] only (never an all-zero mask)
        pad_id = engine.config.pad_token_id
        ids = np.concatenate([ids, np.full((rows - b, ids.shape[1]), pad_id, ids.dtype)])
        filler = np.zeros((rows - b, mask.shape[1]), mask.dtype)
        filler[:, 0] = 1
        mask = np.concatenate([mask, filler])
    return np.asarray(engine(ids, mask), dtype=np.float32)[:b]
