"""The compile boundary: one pure forward, jitted once per shape of the plan, data-parallel."""

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

from flaxsent.core.model import DistilBertForSequenceClassification
from flaxsent.core.plan import Batch, Shape
from flaxsent.errors import FlaxsentError

PRECISIONS = ("default", "high", "highest")
DEFAULT_CACHE_DIR = Path(os.environ.get("FLAXSENT_CACHE_DIR",
                                        Path.home() / ".cache" / "flaxsent" / "jax"))
_cache_lock = threading.Lock()


def forward(model: DistilBertForSequenceClassification, input_ids: jax.Array,
            segment_ids: jax.Array, position_ids: jax.Array, cls_index: jax.Array) -> jax.Array:
    """The one pure function the engine compiles, for every shape of the plan.

    [B, L] ids, segments, positions and [B, S] [CLS] columns -> logits [B, S, C]; a padded
    batch is the case S = 1 (see `plan.Batch`).
    """
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


def place(tree, sharding):
    """Arrays onto the devices; abstract leaves (an `abstract_model`'s ShapeDtypeStructs) stay
    abstract, so an engine over compile-only devices (a TPU topology, no TPU) can still `lower`."""
    return jax.tree.map(lambda x: x if isinstance(x, jax.ShapeDtypeStruct)
                        else jax.device_put(x, sharding), tree)


def batch_specs(shape: Shape, rows: int) -> list[jax.ShapeDtypeStruct]:
    """Abstract inputs of a forward of `shape` with `rows` rows (all of them, or one device's):
    ids, segments, positions [rows, L] and [CLS] columns [rows, S], to lower without data."""
    tokens = jax.ShapeDtypeStruct((rows, shape.length), np.int32)  # [B, L]
    return [tokens, tokens, tokens, jax.ShapeDtypeStruct((rows, shape.slots), np.int32)]


def _check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise FlaxsentError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    return precision


class DeviceProgram:
    """What every compiled program (the engines, the training step) shares: its devices,
    matmul precision, the record of the shapes it traced, and the ('data',) mesh shardings."""

    def __init__(self, model: DistilBertForSequenceClassification,
                 devices: int | Sequence[jax.Device] | None, precision: str):
        self.devices = resolve_devices(devices)
        self.precision = _check_precision(precision)
        self.config = model.config
        self._traced: list[tuple[int, int, int]] = []  # appended at trace time only

    @property
    def n_devices(self) -> int:
        return len(self.devices)

    @property
    def compiled_shapes(self) -> list[tuple[int, int, int]]:
        """(rows, length, slots) of every shape compiled so far, in order of first use."""
        return list(self._traced)

    def mesh_shardings(self) -> tuple[Mesh, NamedSharding, NamedSharding]:
        """A 1-axis ('data',) mesh over the devices; replicated (P()) and batch (P('data'))."""
        mesh = Mesh(np.asarray(self.devices), ("data",))
        return mesh, NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))

    def _check_rows(self, rows: int) -> None:
        if rows % self.n_devices:
            raise ValueError(f"batch of {rows} rows does not split over {self.n_devices} devices")


class Engine(DeviceProgram):
    """The forward jitted over a 1-axis ('data',) mesh: params replicated, batch sharded.

    `run` dispatches asynchronously and returns a device array; every distinct shape compiles
    once and is recorded in `compiled_shapes`.
    """

    def __init__(self, model: DistilBertForSequenceClassification, *,
                 devices: int | Sequence[jax.Device] | None = None,
                 precision: str = "highest"):
        super().__init__(model, devices, precision)
        self.mesh, replicated, self._batch = self.mesh_shardings()
        graphdef, state = nnx.split(model)
        self._state = place(state, replicated)

        def pure_forward(state, input_ids, segment_ids, position_ids, cls_index):
            self._traced.append((*input_ids.shape, cls_index.shape[1]))  # at trace time only
            return forward(nnx.merge(graphdef, state), input_ids, segment_ids, position_ids,
                           cls_index)

        self._jitted = jax.jit(pure_forward, in_shardings=(replicated, *[self._batch] * 4),
                               out_shardings=self._batch)

    @property
    def n_compilations(self) -> int:
        """Executables in the jit cache: len(compiled_shapes) unless something recompiled."""
        return self._jitted._cache_size()

    def lower(self, shape: Shape) -> jax.stages.Lowered:
        """The forward of one shape, traced and lowered but not run: `.compile()` it ahead of
        time, for these devices even when they are not attached (a TPU topology)."""
        self._check_rows(shape.rows)
        with jax.default_matmul_precision(self.precision):
            return self._jitted.lower(self._state, *batch_specs(shape, shape.rows))

    def run(self, batch: Batch) -> jax.Array:
        """Dispatch one batch of the plan; logits [B, S, C] (asynchronously)."""
        self._check_rows(batch.shape.rows)
        placed = [jax.device_put(a, self._batch) for a in batch.arrays()]
        with jax.default_matmul_precision(self.precision):
            return self._jitted(self._state, *placed)


class PmapEngine(DeviceProgram):
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
            lambda x: jax.ShapeDtypeStruct((n, *x.shape), x.dtype, sharding=stacked)
            if isinstance(x, jax.ShapeDtypeStruct)
            else jax.device_put(np.broadcast_to(np.asarray(x), (n, *x.shape)), stacked), state)

        def replica_forward(state, input_ids, segment_ids, position_ids, cls_index):
            # [B/n, L] per device; the shape recorded is the whole batch's
            self._traced.append((input_ids.shape[0] * n, input_ids.shape[1], cls_index.shape[1]))
            return forward(nnx.merge(graphdef, state), input_ids, segment_ids, position_ids,
                           cls_index)

        self._pmapped = jax.pmap(replica_forward, devices=self.devices)

    def lower(self, shape: Shape) -> jax.stages.Lowered:
        """The per-device forward of one shape, lowered but not run (see `Engine.lower`)."""
        self._check_rows(shape.rows)
        n = self.n_devices
        specs = [jax.ShapeDtypeStruct((n, *s.shape), s.dtype)  # [n, B/n, ...]
                 for s in batch_specs(shape, shape.rows // n)]
        with jax.default_matmul_precision(self.precision):
            return self._pmapped.lower(self._state, *specs)

    def run(self, batch: Batch) -> jax.Array:
        """Dispatch one batch of the plan; logits [B, S, C]."""
        self._check_rows(batch.shape.rows)
        n = self.n_devices
        split = [a.reshape(n, a.shape[0] // n, *a.shape[1:])  # [n, B/n, ...]
                 for a in batch.arrays()]
        with jax.default_matmul_precision(self.precision):
            out = self._pmapped(self._state, *split)  # [n, B/n, S, C]
        return out.reshape(batch.input_ids.shape[0], *out.shape[2:])


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
    """Logits [B, C] of one ad-hoc padded batch (rows padded to a multiple of the devices),
    run as the plan's one-text-a-row layout: segments = the mask, positions = 0..L-1."""
    ids = np.asarray(input_ids)
    mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask)
    if ids.ndim != 2 or mask.shape != ids.shape:
        raise ValueError(f"input_ids [B, L] and a mask of the same shape, got {ids.shape} and "
                         f"{mask.shape}")
    if not mask[:, 0].all():
        raise ValueError("attention_mask must keep position 0 ([CLS]) of every row")
    b, length = ids.shape
    rows = -(-b // engine.n_devices) * engine.n_devices
    empty = np.zeros((rows - b, length), np.int32)  # filler rows: no text, never read
    batch = Batch(
        input_ids=np.concatenate([ids.astype(np.int32), empty + engine.config.pad_token_id]),
        segment_ids=np.concatenate([(mask != 0).astype(np.int32), empty]),
        position_ids=np.broadcast_to(np.arange(length, dtype=np.int32), (rows, length)).copy(),
        cls_index=np.zeros((rows, 1), np.int32),
        positions=np.arange(b, dtype=np.int64), slots=np.arange(b, dtype=np.int64),
        real_tokens=int((mask != 0).sum()))
    return batch.select(np.asarray(engine.run(batch), dtype=np.float32))
