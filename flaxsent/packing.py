"""Sequence packing: several short texts per fixed-length row, each attending only to itself.

Bucketing pads each text up to its bucket's length (a 23-token sentence in a 32 bucket wastes
28%); packing fills rows of `row_length` tokens with whole texts instead, so nearly every
computed token is a real one, and one (rows, row_length) shape serves every short text.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PackPlan:
    """The packed batch shape: `rows` rows of `row_length` tokens, up to `slots` texts a row."""

    row_length: int
    rows: int
    # Texts per row: the last layer and the head run once per slot, so few slots keep them
    # cheap; row_length // 8 leaves rows of texts longer than 8 tokens (nearly all) full.
    slots: int

    @classmethod
    def build(cls, row_length: int, max_batch_tokens: int, device_count: int = 1,
              max_batch_size: int = 256) -> PackPlan:
        """Rows from the token budget, a multiple of the device count (at least one per device)."""
        if row_length < 2:
            raise ValueError(f"pack length must be at least 2, got {row_length}")
        rows = min(max_batch_size, max_batch_tokens // row_length)
        rows = max(device_count, rows // device_count * device_count)
        return cls(row_length=row_length, rows=rows, slots=max(1, row_length // 8))

    def shape(self) -> tuple[int, int, int]:
        """(rows, row_length, slots): the one packed shape this plan compiles."""
        return (self.rows, self.row_length, self.slots)


@dataclass
class PackedBatch:
    """One packed batch plus where each caller's text sits in it."""

    input_ids: np.ndarray  # [B, L] int32
    segment_ids: np.ndarray  # [B, L] int32: 1.. per text in its row, 0 for padding
    position_ids: np.ndarray  # [B, L] int32: restart at 0 for every text
    cls_index: np.ndarray  # [B, S] int32: each text's [CLS] column
    positions: np.ndarray  # [n] int64 caller index of each text
    slots: np.ndarray  # [n] int64 flat (row * S + slot) of each text's logits
    real_tokens: int

    @property
    def n_real(self) -> int:
        return len(self.positions)

    @property
    def computed_tokens(self) -> int:
        return int(self.input_ids.size)

    def select(self, logits: np.ndarray) -> np.ndarray:
        """The real texts' rows [n, C] from the packed output [B, S, C]."""
        return logits.reshape(-1, logits.shape[-1])[self.slots]


def pack_rows(lengths: np.ndarray, row_length: int, max_items: int) -> list[list[int]]:
    """Group items (all <= row_length) into rows of at most max_items: longest first, then the
    longest that still fits."""
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


def iter_packed(indices: list[int], arrays: list[np.ndarray], plan: PackPlan,
                pad_id: int) -> Iterator[PackedBatch]:
    """Packed batches of the given texts (caller indices, id arrays); the last one padded."""
    lengths = np.fromiter((a.shape[0] for a in arrays), np.int64, len(arrays))
    rows = pack_rows(lengths, plan.row_length, plan.slots)
    b, length, s = plan.shape()
    for start in range(0, len(rows), b):
        ids = np.full((b, length), pad_id, np.int32)
        seg = np.zeros((b, length), np.int32)
        pos = np.zeros((b, length), np.int32)
        cls = np.zeros((b, s), np.int32)
        positions, slots = [], []
        for r, row in enumerate(rows[start:start + b]):
            col = 0
            for k, item in enumerate(row):
                n = int(lengths[item])
                ids[r, col:col + n] = arrays[item]
                seg[r, col:col + n] = k + 1
                pos[r, col:col + n] = np.arange(n)
                cls[r, k] = col
                positions.append(indices[item])
                slots.append(r * s + k)
                col += n
        yield PackedBatch(ids, seg, pos, cls, np.asarray(positions, np.int64),
                          np.asarray(slots, np.int64), int(lengths[
                              [i for row in rows[start:start + b] for i in row]].sum()))
