"""The shape plan: every batch flaxsent runs, and the fixed set of shapes they come in.

A jitted forward compiles once per input shape, so the plan decides, in one place, which shapes
exist and how texts fill them. Texts up to `pack_length` tokens are *packed*: several whole texts
share a row of `pack_length` tokens, each attending only to itself (position ids restart per
text), so nearly every computed token is real. Longer texts go to length *buckets*, one text per
row, padded to the smallest boundary that holds them. Both are the same batch type: a bucket is
a packed layout with one slot per row (segment ids = the mask, positions = 0..L-1, [CLS] at 0),
so one forward serves every shape (measured on CPU: equal speed, identical logits).

Each shape's row count comes from a token budget (per platform and device) and is a multiple of
the device count. The last batch of a shape in a window runs at the fewest rows of a short
ladder (the shape's rows halved up to `rungs - 1` times) that hold it, padded with empty rows
to that rung: a lone long text, or a small file, or a server's lone request, does not pay for
a full batch, and the set of shapes stays fixed and small. Batches never span two windows of
the input stream, so the rows of any window are computed the same whatever came before
(resume and sharding rely on it).

Pure numpy on purpose: this runs on the host while the device works on the previous batch.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import numbers
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

DEFAULT_BOUNDARIES: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
DEFAULT_PACK_LENGTH = 128
# On a CPU, low precision (int8, or bf16 on its f32-accumulating kernels) and gradients pack rows
# of 64: cheap dense layers, or a backward that pays attention twice, leave attention (whose
# cost a token grows with its row) to decide. On the 2-core Xeon: full-size int8 on the embedded
# corpus, sentences/s, best of 5: rows of 32 412, 64 472, 96 428, 128 400; integrated gradients
# on 60 SST-2 sentences, fp32: 5.4-5.6 attributions/s at 64 against 4.6-4.7 at 128. fp32
# inference: 139 and 134 at 64 and 128, so it keeps 128 (fewer texts split off to buckets).
CPU_SHORT_PACK_LENGTH = 64
DEFAULT_MAX_BATCH_SIZE = 256
# Row counts a shape runs at: its rows, then halved up to 3 times (multiples of the device
# count). On the 2-core Xeon, full-size int8: a lone 66-token text ran in 99 ms as 8x128 and
# 21 ms as 1x128; the embedded bench corpus's last batches cost 1,446 of 21,504 tokens.
DEFAULT_RUNGS = 4
# Default token budget of one batch, per device. CPU: measured on the 2-core dev machine
# (full-size model, packed rows of 128): 1024 -> 2,236-2,320 real tokens/s, 2048 -> 1,984,
# 4096 -> 1,426 (smaller batches stay in cache). GPUs and TPUs want large batches.
BATCH_TOKENS_PER_DEVICE = {"cpu": 1024, "accelerator": 16384}


def default_pack_length(platform: str, quantize: str = "none", dtype: str = "float32", *,
                        gradients: bool = False) -> int:
    """Tokens a packed row holds by default: CPU_SHORT_PACK_LENGTH on a CPU for int8, bf16 or
    gradients (attribution), else DEFAULT_PACK_LENGTH."""
    short = quantize == "int8" or dtype == "bfloat16" or gradients
    return CPU_SHORT_PACK_LENGTH if platform == "cpu" and short else DEFAULT_PACK_LENGTH


def batch_budget(platform: str, n_devices: int) -> int:
    """Tokens per batch for `n_devices` devices of a platform ('cpu', 'gpu', 'tpu')."""
    per_device = BATCH_TOKENS_PER_DEVICE.get(platform, BATCH_TOKENS_PER_DEVICE["accelerator"])
    return n_devices * per_device


def _is_int(value: object) -> bool:
    """True for Python/numpy integers but not bools (True is not a length)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _check_int(name: str, value: object, minimum: int) -> int:
    """`value` as an int, or ValueError naming the argument."""
    if not _is_int(value) or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def row_rungs(rows: int, device_count: int, rungs: int) -> list[int]:
    """The row counts a shape of `rows` rows runs at, increasing: `rows` halved up to
    `rungs - 1` times, each a multiple of `device_count` (and at least one row per device)."""
    return sorted({max(device_count, rows // 2 ** k // device_count * device_count)
                   for k in range(rungs)})


def _rows(max_batch_tokens: int, length: int, device_count: int, max_batch_size: int) -> int:
    """Rows of `length` tokens within the budget and the cap, a multiple of the device count."""
    rows = min(max_batch_size, max_batch_tokens // length) // device_count * device_count
    return max(device_count, rows)


@dataclasses.dataclass(frozen=True, order=True)
class Shape:
    """One compiled batch shape: `rows` rows of `length` tokens, up to `slots` texts a row."""

    rows: int
    length: int
    slots: int

    @property
    def packed(self) -> bool:
        return self.slots > 1

    @property
    def tokens(self) -> int:
        return self.rows * self.length

    def as_tuple(self) -> tuple[int, int, int]:
        return (self.rows, self.length, self.slots)

    def __str__(self) -> str:
        return f"{self.rows}x{self.length}x{self.slots}"


@dataclasses.dataclass
class Batch:
    """One fixed-shape batch and where each caller's text sits in it."""

    input_ids: np.ndarray  # [B, L] int32, pad id outside texts
    segment_ids: np.ndarray  # [B, L] int32: 1.. per text in its row, 0 for padding
    position_ids: np.ndarray  # [B, L] int32: 0.. restarting for every text
    cls_index: np.ndarray  # [B, S] int32: each text's [CLS] column (0 in empty slots)
    positions: np.ndarray  # [n] int64: caller index of each text
    slots: np.ndarray  # [n] int64: flat row * S + slot of each text's logits
    real_tokens: int

    @property
    def shape(self) -> Shape:
        return Shape(*self.input_ids.shape, self.cls_index.shape[1])

    @property
    def n_real(self) -> int:
        return len(self.positions)

    @property
    def computed_tokens(self) -> int:
        """Tokens the device computes for this batch (B * L), padding included."""
        return int(self.input_ids.size)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """What the forward takes: ids, segments, positions [B, L] and [CLS] columns [B, S]."""
        return self.input_ids, self.segment_ids, self.position_ids, self.cls_index

    def select(self, logits: np.ndarray) -> np.ndarray:
        """The real texts' logits [n, C] from the forward's output [B, S, C]."""
        return logits.reshape(-1, logits.shape[-1])[self.slots]


def pack_rows(lengths: np.ndarray, row_length: int, max_items: int) -> list[list[int]]:
    """Group items (each <= row_length) into rows of at most `max_items`: the longest free item
    first, then the longest that still fits, until none does."""
    order = np.argsort(lengths, kind="stable")  # ascending
    free_lengths = lengths[order].tolist()
    free_items = order.tolist()
    rows = []
    while free_lengths:
        space = row_length - free_lengths.pop()
        row = [free_items.pop()]
        while free_lengths and free_lengths[0] <= space and len(row) < max_items:
            j = bisect.bisect_right(free_lengths, space) - 1  # the longest that still fits
            space -= free_lengths.pop(j)
            row.append(free_items.pop(j))
        rows.append(row)
    return rows


def fill_batch(shape: Shape, rows: Sequence[Sequence[int]], indices: Sequence[int],
               arrays: Sequence[np.ndarray], pad_id: int) -> Batch:
    """Lay out `rows` (each a list of items: positions into `indices`/`arrays`) in one batch of
    `shape`; rows beyond len(rows) stay empty."""
    b, length, s = shape.as_tuple()
    ids = np.full((b, length), pad_id, np.int32)
    seg = np.zeros((b, length), np.int32)
    pos = np.zeros((b, length), np.int32)
    cls = np.zeros((b, s), np.int32)
    positions, slots = [], []
    real = 0
    for r, row in enumerate(rows):
        col = 0
        for k, item in enumerate(row):
            n = arrays[item].shape[0]
            ids[r, col:col + n] = arrays[item]
            seg[r, col:col + n] = k + 1
            pos[r, col:col + n] = np.arange(n)
            cls[r, k] = col
            positions.append(indices[item])
            slots.append(r * s + k)
            col += n
        real += col
    return Batch(ids, seg, pos, cls, np.asarray(positions, np.int64),
                 np.asarray(slots, np.int64), real)


@dataclasses.dataclass(frozen=True)
class ShapePlan:
    """The shapes a run compiles and how texts fill them: a packed shape and length buckets."""

    max_length: int  # longest input, in tokens
    pack: Shape | None  # texts up to pack.length tokens share rows; None: buckets only
    buckets: tuple[Shape, ...]  # one text a row, increasing lengths; the last is max_length
    device_count: int = 1  # every row count is a multiple of it
    rungs: int = 1  # row counts a shape runs at (`row_rungs`); 1: always its full rows

    @classmethod
    def build(cls, max_length: int = 512, *, boundaries: Sequence[int] | None = None,
              max_batch_tokens: int = 8192, device_count: int = 1,
              max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
              pack_length: int | None = DEFAULT_PACK_LENGTH,
              rungs: int = DEFAULT_RUNGS) -> ShapePlan:
        """A plan whose shapes fit a token budget and split evenly over `device_count` devices.

        boundaries: bucket lengths (default powers of two 16..512, clipped to max_length);
        max_length is always the last. pack_length: rows of packed texts (None or 0: no
        packing); buckets at or below it are never used and are left out. rungs: row counts
        each shape may run at (1: its full rows only; see `row_rungs`).
        """
        max_length = _check_int("max_length", max_length, 2)
        max_batch_tokens = _check_int("max_batch_tokens", max_batch_tokens, 1)
        device_count = _check_int("device_count", device_count, 1)
        max_batch_size = _check_int("max_batch_size", max_batch_size, 1)
        rungs = _check_int("rungs", rungs, 1)
        bounds = _boundaries(boundaries, max_length)
        pack = None
        if pack_length:
            pack_length = min(_check_int("pack_length", pack_length, 2), max_length)
            # Texts per row: the last block and the head run once per slot, so few slots keep
            # them cheap; pack_length // 8 leaves rows of texts longer than 8 tokens full.
            pack = Shape(_rows(max_batch_tokens, pack_length, device_count, max_batch_size),
                         pack_length, max(1, pack_length // 8))
            bounds = [b for b in bounds if b > pack_length]
        buckets = tuple(Shape(_rows(max_batch_tokens, b, device_count, max_batch_size), b, 1)
                        for b in bounds)
        return cls(max_length=max_length, pack=pack, buckets=buckets, device_count=device_count,
                   rungs=rungs)

    def shapes(self) -> list[Shape]:
        """The plan's shapes at their full rows, one per kind of text: the packed one (if any),
        then the buckets (what `shape_for` answers)."""
        return ([self.pack] if self.pack else []) + list(self.buckets)

    def batch_shapes(self) -> list[Shape]:
        """Every shape a batch of this plan can take (what can compile): each of `shapes()` at
        its full rows, then at its smaller rungs, fewest rows last."""
        return [dataclasses.replace(shape, rows=rows) for shape in self.shapes()
                for rows in reversed(row_rungs(shape.rows, self.device_count, self.rungs))]

    def fitted(self, shape: Shape, rows: int) -> Shape:
        """`shape` at the fewest rows of its rungs that hold `rows` filled rows."""
        fits = [n for n in row_rungs(shape.rows, self.device_count, self.rungs) if n >= rows]
        return dataclasses.replace(shape, rows=fits[0] if fits else shape.rows)

    def shape_for(self, length: int) -> Shape:
        """The shape a text of `length` tokens runs in."""
        if not _is_int(length) or not 1 <= length <= self.max_length:
            raise ValueError(f"length must be an integer from 1 to {self.max_length}, "
                             f"got {length!r}")
        if self.pack and length <= self.pack.length:
            return self.pack
        at = bisect.bisect_left([s.length for s in self.buckets], length)
        return self.buckets[at]

    def batches(self, encoded: Iterable[tuple[int, Sequence[int]]], pad_id: int,
                window: int = 4096) -> Iterator[Batch]:
        """Fixed-shape batches of (caller index, token ids) items, one window at a time.

        Within a window: packed rows first (longest texts first), then each bucket's texts,
        shortest first; each shape's last batch at the fewest rows that hold it (`fitted`).
        Every item lands in exactly one batch.
        """
        window = _check_int("window", window, 1)
        if not _is_int(pad_id):
            raise ValueError(f"pad_id must be an integer token id, got {pad_id!r}")
        items = iter(encoded)
        while True:
            indices, arrays = _read_window(items, window, self.max_length)
            if not indices:
                return
            yield from self._window_batches(indices, arrays, pad_id)
            if len(indices) < window:
                return

    def warmup_batches(self, pad_id: int) -> Iterator[Batch]:
        """One batch per batch shape (a two-token dummy text in it): running them compiles
        them all."""
        dummy = [np.full(2, pad_id, np.int32)]
        for shape in self.batch_shapes():
            yield fill_batch(shape, [[0]], [0], dummy, pad_id)

    def _window_batches(self, indices: list[int], arrays: list[np.ndarray],
                        pad_id: int) -> Iterator[Batch]:
        lengths = np.fromiter((a.shape[0] for a in arrays), np.int64, len(arrays))  # [W]
        rest = np.arange(len(arrays))
        if self.pack:
            short = lengths <= self.pack.length
            chosen = np.flatnonzero(short)
            rows = [[int(chosen[i]) for i in row]
                    for row in pack_rows(lengths[chosen], self.pack.length, self.pack.slots)]
            for start in range(0, len(rows), self.pack.rows):
                chunk = rows[start:start + self.pack.rows]
                yield fill_batch(self.fitted(self.pack, len(chunk)), chunk, indices, arrays,
                                 pad_id)
            rest = np.flatnonzero(~short)
        rest = rest[np.argsort(lengths[rest], kind="stable")]  # shortest first
        bucket_of = np.searchsorted([s.length for s in self.buckets], lengths[rest])
        for b, shape in enumerate(self.buckets):
            members = rest[bucket_of == b].tolist()
            for start in range(0, len(members), shape.rows):
                rows = [[i] for i in members[start:start + shape.rows]]
                yield fill_batch(self.fitted(shape, len(rows)), rows, indices, arrays, pad_id)


def _boundaries(boundaries: Sequence[int] | None, max_length: int) -> list[int]:
    """Validated, increasing bucket lengths ending at max_length."""
    if boundaries is None:
        bounds = [b for b in DEFAULT_BOUNDARIES if b < max_length]
    else:
        bounds = list(boundaries)
        if not bounds:
            raise ValueError("boundaries must be non-empty; pass None for the defaults "
                             f"{DEFAULT_BOUNDARIES} clipped to max_length={max_length}")
        for b in bounds:
            if not _is_int(b) or int(b) < 1:
                raise ValueError(f"boundaries must be positive integers, got {b!r} in "
                                 f"{tuple(boundaries)}")
        bounds = [int(b) for b in bounds]
        for a, b in itertools.pairwise(bounds):
            if b <= a:
                raise ValueError(f"boundaries must be strictly increasing, got {tuple(bounds)} "
                                 f"({a} then {b})")
        if bounds[-1] > max_length:
            raise ValueError(f"boundary {bounds[-1]} exceeds max_length={max_length}; drop it "
                             "or raise max_length")
    if not bounds or bounds[-1] < max_length:
        bounds.append(max_length)
    return bounds


def _read_window(items: Iterator[tuple[int, Sequence[int]]], window: int, max_length: int,
                 ) -> tuple[list[int], list[np.ndarray]]:
    """Up to `window` items, each validated: caller indices and 1-D id arrays."""
    indices: list[int] = []
    arrays: list[np.ndarray] = []
    for index, tokens in itertools.islice(items, window):
        ids = np.asarray(tokens)  # [n]
        if ids.ndim != 1:
            raise ValueError(f"input {index}: token ids must be a flat sequence of ints, got "
                             f"shape {ids.shape}")
        if ids.shape[0] == 0:
            raise ValueError(f"input {index} is empty (0 tokens); every input needs at least "
                             "[CLS] and [SEP]")
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"input {index}: token ids must be integers, got dtype {ids.dtype}")
        if ids.shape[0] > max_length:
            raise ValueError(f"input {index} has {ids.shape[0]} tokens, more than the largest "
                             f"shape's {max_length}; truncate it first")
        indices.append(index)
        arrays.append(ids)
    return indices, arrays


class OrderedCollector:
    """Puts per-text results back in caller order, releasing the longest ready prefix."""

    def __init__(self, start: int = 0) -> None:
        """Expect caller indices start, start + 1, ... in that order."""
        self._next = _check_int("start", start, 0)
        self._pending: dict[int, np.ndarray | None] = {}

    @property
    def next_index(self) -> int:
        """Caller index of the next row `pop_ready` will return."""
        return self._next

    @property
    def pending(self) -> int:
        """Rows held because an earlier caller index has not arrived yet."""
        return len(self._pending)

    def add(self, positions: np.ndarray, rows: np.ndarray) -> None:
        """Hold one batch's real rows (rows [n, ...]) keyed by caller index."""
        positions = np.asarray(positions)
        rows = np.asarray(rows)
        if positions.ndim != 1 or rows.ndim < 1 or rows.shape[0] != positions.shape[0]:
            raise ValueError(f"got {positions.shape} positions but rows of shape {rows.shape}; "
                             "pass only the real rows (batch.select(logits))")
        for pos, row in zip(positions.tolist(), rows, strict=True):
            self._hold(pos, row)

    def add_placeholder(self, index: int) -> None:
        """Hold None for a caller index that has no result (an input that was skipped)."""
        self._hold(index, None)

    def pop_ready(self) -> list[np.ndarray | None]:
        """Remove and return the rows that continue the caller order from the last one popped."""
        ready: list[np.ndarray | None] = []
        while self._next in self._pending:
            ready.append(self._pending.pop(self._next))
            self._next += 1
        return ready

    def _hold(self, index: int, row: np.ndarray | None) -> None:
        if index < self._next or index in self._pending:
            raise ValueError(f"caller index {index} was already added")
        self._pending[index] = row


@dataclasses.dataclass(frozen=True)
class StepPlan:
    """The shapes of training steps: all of a step's examples in one batch.

    Packed: the examples share rows of `length` tokens, and the batch has the fewest rows of a
    ladder (the device count times 1, 2, 3, 4, 6, 8, 12, ...) that holds them, so a run compiles
    a handful of shapes and computes fewer than 1.5 times the rows it fills (powers of two alone
    cost up to twice: 5 rows' worth of examples ran in 8; measured on the training benchmark's
    steps, 17% fewer rows computed). Padded (`packed=False`): one example a row, every step the
    same shape, as transformers' run_flax_glue.py pads (the comparison the training benchmark
    makes).
    """

    length: int  # row length in tokens (the longest example)
    slots: int  # examples a row at most
    ladder: tuple[int, ...]  # row counts, increasing

    @classmethod
    def build(cls, max_length: int, examples: int, device_count: int = 1,
              packed: bool = True) -> StepPlan:
        """Shapes for steps of up to `examples` examples of up to `max_length` tokens."""
        max_length = _check_int("max_length", max_length, 2)
        examples = _check_int("examples", examples, 1)
        device_count = _check_int("device_count", device_count, 1)
        most = -(-examples // device_count) * device_count  # one example a row, rows split evenly
        if not packed:
            return cls(length=max_length, slots=1, ladder=(most,))
        per_device = [1, 2, 3]  # rows a device: 1, 2, 3, 4, 6, 8, 12, ... (2^k and 1.5 x 2^k)
        while per_device[-1] * device_count < most:
            per_device.append(per_device[-2] * 2)
        ladder = sorted({min(most, n * device_count) for n in per_device})
        return cls(length=max_length, slots=max(1, max_length // 8), ladder=tuple(ladder))

    def shapes(self) -> list[Shape]:
        """Every shape a step can take."""
        return [Shape(rows, self.length, self.slots) for rows in self.ladder]

    def batch(self, indices: Sequence[int], arrays: Sequence[np.ndarray], pad_id: int) -> Batch:
        """One batch holding every example (caller indices, 1-D id arrays) of a step."""
        for index, ids in zip(indices, arrays, strict=True):
            if not 1 <= ids.shape[0] <= self.length:
                raise ValueError(f"example {index} has {ids.shape[0]} tokens; a step takes 1 to "
                                 f"{self.length}")
        lengths = np.fromiter((a.shape[0] for a in arrays), np.int64, len(arrays))
        rows = pack_rows(lengths, self.length, self.slots) if self.slots > 1 else \
            [[i] for i in range(len(arrays))]
        fits = [n for n in self.ladder if n >= len(rows)]
        if not fits:
            raise ValueError(f"{len(arrays)} examples need {len(rows)} rows; this plan has at "
                             f"most {self.ladder[-1]}")
        return fill_batch(Shape(fits[0], self.length, self.slots), rows, indices, arrays, pad_id)
