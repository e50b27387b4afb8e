"""Bucket plan: pad variable-length token id lists into a bounded set of fixed batch shapes.

A jitted forward compiles one executable per input shape, so every batch this module emits has
a shape from `BucketPlan.shapes()`: inputs are length-sorted within a window, grouped by the
smallest bucket that holds them, padded (tokens and rows) to that bucket's (batch, length), and
tagged with their caller indices so results can be put back in the caller's order.

Pure numpy on purpose: this runs on the host while the device works on the previous batch.
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .packing import PackedBatch, PackPlan, iter_packed

DEFAULT_BOUNDARIES: tuple[int, ...] = (16, 32, 64, 128, 256, 512)


def _is_int(value: object) -> bool:
    """True for Python/numpy integers but not bools (True is not a length)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _check_int(name: str, value: object, minimum: int) -> int:
    """Return `value` as int, or raise ValueError naming the argument."""
    if not _is_int(value) or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _round_down(value: int, multiple: int) -> int:
    """Largest multiple of `multiple` that is <= value, but at least `multiple`."""
    return max(multiple, (value // multiple) * multiple)


@dataclass(frozen=True)
class BucketPlan:
    """The fixed set of (batch_size, padded_length) shapes the engine compiles for."""

    boundaries: tuple[int, ...]  # strictly increasing padded lengths; last == max_length
    batch_sizes: tuple[int, ...]  # rows per batch for each bucket; each a multiple of device_count

    def __post_init__(self) -> None:
        """Reject plans that would produce ambiguous buckets or shapes."""
        if len(self.boundaries) == 0:
            raise ValueError("BucketPlan needs at least one boundary, got ()")
        if len(self.boundaries) != len(self.batch_sizes):
            raise ValueError(
                f"BucketPlan needs one batch size per boundary: got {len(self.boundaries)} "
                f"boundaries {self.boundaries} and {len(self.batch_sizes)} batch sizes "
                f"{self.batch_sizes}"
            )
        for b in self.boundaries:
            _check_int(f"boundary in {self.boundaries}", b, 1)
        for a, b in itertools.pairwise(self.boundaries):
            if b <= a:
                raise ValueError(
                    f"boundaries must be strictly increasing, got {self.boundaries} ({a} then {b})"
                )
        for s in self.batch_sizes:
            _check_int(f"batch size in {self.batch_sizes}", s, 1)

    @classmethod
    def build(
        cls,
        max_length: int = 512,
        boundaries: Sequence[int] | None = None,
        max_batch_tokens: int = 8192,
        device_count: int = 1,
        max_batch_size: int = 256,
    ) -> BucketPlan:
        """Build a plan whose batch sizes fit a token budget and split evenly over devices."""
        max_length = _check_int("max_length", max_length, 2)
        max_batch_tokens = _check_int("max_batch_tokens", max_batch_tokens, 1)
        device_count = _check_int("device_count", device_count, 1)
        max_batch_size = _check_int("max_batch_size", max_batch_size, 1)

        if boundaries is None:
            bounds = [b for b in DEFAULT_BOUNDARIES if b <= max_length]
        else:
            bounds = list(boundaries)
            if not bounds:
                raise ValueError(
                    "boundaries must be non-empty; pass None for the defaults "
                    f"{DEFAULT_BOUNDARIES} clipped to max_length={max_length}"
                )
            for b in bounds:
                if not _is_int(b) or int(b) < 1:
                    raise ValueError(
                        f"boundaries must be positive integers, got {b!r} in {tuple(boundaries)}"
                    )
            bounds = [int(b) for b in bounds]
            for a, b in itertools.pairwise(bounds):
                if b <= a:
                    raise ValueError(
                        f"boundaries must be strictly increasing, got {tuple(bounds)} "
                        f"({a} then {b})"
                    )
            if bounds[-1] > max_length:
                raise ValueError(
                    f"boundary {bounds[-1]} exceeds max_length={max_length}; drop it or raise "
                    "max_length"
                )
        if not bounds or bounds[-1] < max_length:
            bounds.append(max_length)

        cap = _round_down(max_batch_size, device_count)
        sizes = tuple(
            min(cap, _round_down(max_batch_tokens // length, device_count)) for length in bounds
        )
        return cls(boundaries=tuple(bounds), batch_sizes=sizes)

    @property
    def max_length(self) -> int:
        """Longest input (in tokens) the plan accepts."""
        return self.boundaries[-1]

    def bucket_index(self, length: int) -> int:
        """Index of the smallest bucket whose boundary holds `length` tokens."""
        if not _is_int(length) or length < 1:
            raise ValueError(f"length must be an integer >= 1, got {length!r}")
        if length > self.boundaries[-1]:
            raise ValueError(
                f"length {length} exceeds the largest bucket {self.boundaries[-1]}; truncate the "
                "input or build the plan with a larger max_length"
            )
        return int(np.searchsorted(self.boundaries, length, side="left"))

    def shapes(self) -> list[tuple[int, int]]:
        """All (batch_size, length) input shapes this plan can emit, one per bucket."""
        return list(zip(self.batch_sizes, self.boundaries, strict=True))


@dataclass
class Batch:
    """One fixed-shape padded batch plus what is needed to unpad it."""

    bucket: int  # index into plan.boundaries
    input_ids: np.ndarray  # [B, L] int32, pad_id in padded tokens and filler rows
    attention_mask: np.ndarray  # [B, L] int32; filler rows are 1 only at position 0
    positions: np.ndarray  # [n] int64, caller index of rows 0..n-1
    n_real: int  # rows n_real..B-1 are filler
    real_tokens: int  # sum of the real rows' lengths

    def select(self, logits: np.ndarray) -> np.ndarray:
        """The real rows [n, C] of the batch's output [B, C]."""
        return logits[: self.n_real]

    @property
    def computed_tokens(self) -> int:
        """Tokens the device computes for this batch (B * L), padding included."""
        return int(self.input_ids.size)


def _read_window(
    items: Iterator[tuple[int, Sequence[int]]], window: int, max_length: int
) -> tuple[list[int], list[np.ndarray]]:
    """Take up to `window` items, validating each; returns caller indices and 1-D id arrays."""
    indices: list[int] = []
    arrays: list[np.ndarray] = []
    for index, tokens in itertools.islice(items, window):
        ids = np.asarray(tokens)  # [n]
        if ids.ndim != 1:
            raise ValueError(
                f"input {index}: token ids must be a flat sequence of ints, got shape {ids.shape}"
            )
        n = ids.shape[0]
        if n == 0:
            raise ValueError(
                f"input {index} is empty (0 tokens); every input needs at least [CLS] and [SEP]"
            )
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"input {index}: token ids must be integers, got dtype {ids.dtype}")
        if n > max_length:
            raise ValueError(
                f"input {index} has {n} tokens, more than the largest bucket {max_length}; "
                "truncate it first"
            )
        indices.append(index)
        arrays.append(ids)
    return indices, arrays


def _make_batch(
    bucket: int,
    rows: np.ndarray,
    indices: list[int],
    arrays: list[np.ndarray],
    lengths: np.ndarray,
    shape: tuple[int, int],
    pad_id: int,
) -> Batch:
    """Pad the window rows `rows` (positions into `arrays`) into one [B, L] batch."""
    size, length = shape
    n = len(rows)
    input_ids = np.full((size, length), pad_id, dtype=np.int32)  # [B, L]
    for r, i in enumerate(rows):
        ids = arrays[i]
        input_ids[r, : ids.shape[0]] = ids
    row_lengths = np.zeros(size, dtype=np.int64)  # [B]
    row_lengths[:n] = lengths[rows]
    attention_mask = (np.arange(length)[None, :] < row_lengths[:, None]).astype(np.int32)  # [B, L]
    # A filler row with an all-zero mask would softmax over nothing (NaN); give it one token.
    attention_mask[n:, 0] = 1
    positions = np.fromiter((indices[i] for i in rows), dtype=np.int64, count=n)  # [n]
    return Batch(
        bucket=bucket,
        input_ids=input_ids,
        attention_mask=attention_mask,
        positions=positions,
        n_real=n,
        real_tokens=int(row_lengths.sum()),
    )


def iter_batches(
    encoded: Iterable[tuple[int, Sequence[int]]],
    plan: BucketPlan,
    pad_id: int,
    window: int = 4096,
    pack: PackPlan | None = None,
) -> Iterator[Batch | PackedBatch]:
    """Yield fixed-shape padded batches from (caller_index, token_ids), one window at a time.

    With `pack`, texts up to `pack.row_length` tokens are packed several to a row instead.
    """
    window = _check_int("window", window, 1)
    if not _is_int(pad_id):
        raise ValueError(f"pad_id must be an integer token id, got {pad_id!r}")
    bounds = np.asarray(plan.boundaries)
    items = iter(encoded)
    while True:
        indices, arrays = _read_window(items, window, plan.max_length)
        n_read = len(indices)
        if not n_read:
            return
        lengths = np.fromiter((a.shape[0] for a in arrays), dtype=np.int64, count=len(arrays))
        if pack is not None:
            short = lengths <= pack.row_length
            if short.any():
                chosen = np.flatnonzero(short).tolist()
                yield from iter_packed([indices[i] for i in chosen], [arrays[i] for i in chosen],
                                       pack, pad_id)
            keep = np.flatnonzero(~short).tolist()
            indices = [indices[i] for i in keep]
            arrays = [arrays[i] for i in keep]
            lengths = lengths[keep]
        order = np.argsort(lengths, kind="stable")  # [W] window rows, shortest first
        buckets = np.searchsorted(bounds, lengths[order], side="left")  # [W]
        for bucket in np.unique(buckets):
            members = order[buckets == bucket]  # sorted window rows in this bucket
            shape = (plan.batch_sizes[bucket], plan.boundaries[bucket])
            for start in range(0, len(members), shape[0]):
                rows = members[start : start + shape[0]]
                yield _make_batch(int(bucket), rows, indices, arrays, lengths, shape, pad_id)
        if n_read < window:
            return


def _check_rows(positions: np.ndarray, rows: np.ndarray) -> None:
    """Raise unless there is exactly one row per position."""
    if positions.ndim != 1:
        raise ValueError(f"positions must be 1-D, got shape {positions.shape}")
    if rows.ndim < 1 or rows.shape[0] != positions.shape[0]:
        raise ValueError(
            f"got {positions.shape[0]} positions but rows of shape {rows.shape}; pass only the "
            "real rows, e.g. outputs[: batch.n_real]"
        )


def restore_order(
    positions_list: Sequence[np.ndarray], rows_list: Sequence[np.ndarray], n: int
) -> np.ndarray:
    """Scatter per-batch rows into [n, ...] in caller order; raise if any is lost or doubled."""
    n = _check_int("n", n, 0)
    if len(positions_list) != len(rows_list):
        raise ValueError(
            f"got {len(positions_list)} position arrays but {len(rows_list)} row arrays"
        )
    if not rows_list:
        if n:
            raise ValueError(f"no rows given but n={n}; caller indices 0..{n - 1} are missing")
        return np.empty((0,))
    pos_arrays = [np.asarray(p, dtype=np.int64) for p in positions_list]
    row_arrays = [np.asarray(r) for r in rows_list]
    for p, r in zip(pos_arrays, row_arrays, strict=True):
        _check_rows(p, r)
    positions = np.concatenate(pos_arrays)  # [N]
    rows = np.concatenate(row_arrays)  # [N, ...]
    bad = positions[(positions < 0) | (positions >= n)]
    if bad.size:
        raise ValueError(f"caller index {int(bad[0])} is out of range for n={n}")
    counts = np.bincount(positions, minlength=n)  # [n]
    if (counts > 1).any():
        dup = np.flatnonzero(counts > 1)
        raise ValueError(f"caller indices duplicated: {dup[:10].tolist()}")
    if (counts == 0).any():
        missing = np.flatnonzero(counts == 0)
        raise ValueError(f"caller indices missing: {missing[:10].tolist()}")
    out = np.empty((n,) + rows.shape[1:], dtype=rows.dtype)  # [n, ...]
    out[positions] = rows
    return out


class OrderedCollector:
    """Re-assembles per-row results into the caller's order, yielding the longest ready prefix."""

    def __init__(self, start: int = 0) -> None:
        """Expect caller indices start, start + 1, ... in that order."""
        self._next = _check_int("start", start, 0)
        self._pending: dict[int, np.ndarray] = {}

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
        _check_rows(positions, rows)
        for pos, row in zip(positions.tolist(), rows, strict=True):
            if pos < self._next or pos in self._pending:
                raise ValueError(f"caller index {pos} was already added")
            self._pending[pos] = row

    def add_placeholder(self, index: int) -> None:
        """Hold None for a caller index that has no result (an input that was skipped)."""
        if index < self._next or index in self._pending:
            raise ValueError(f"caller index {index} was already added")
        self._pending[index] = None

    def pop_ready(self) -> list[np.ndarray]:
        """Remove and return the rows that continue the caller order from the last one popped."""
        ready: list[np.ndarray] = []
        while self._next in self._pending:
            ready.append(self._pending.pop(self._next))
            self._next += 1
        return ready


def padding_efficiency(real_tokens: int, computed_tokens: int) -> float:
    """Fraction of computed tokens that were real input (1.0 = no padding)."""
    if real_tokens < 0 or computed_tokens < 0 or real_tokens > computed_tokens:
        raise ValueError(
            f"need 0 <= real_tokens <= computed_tokens, got real_tokens={real_tokens}, "
            f"computed_tokens={computed_tokens}"
        )
    if computed_tokens == 0:
        return 1.0  # nothing computed, so nothing wasted
    return real_tokens / computed_tokens
