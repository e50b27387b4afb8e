"""The shape plan: shapes from budgets, every text in exactly one batch, layout, order, parity."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from flax import nnx

from flaxsent.core import checkpoint as ckpt
from flaxsent.core.plan import (
    DEFAULT_BOUNDARIES,
    Batch,
    OrderedCollector,
    Shape,
    ShapePlan,
    StepPlan,
    batch_budget,
    fill_batch,
    pack_rows,
    row_rungs,
)

PAD = 0


def _encoded(lengths: list[int], seed: int = 0) -> list[tuple[int, list[int]]]:
    """Caller-indexed token lists of the given lengths, with ids that are never the pad id."""
    rng = np.random.default_rng(seed)
    return [(i, rng.integers(1, 30000, size=n).tolist()) for i, n in enumerate(lengths)]


def _check_batches(batches: list[Batch], encoded: list[tuple[int, list[int]]],
                   plan: ShapePlan) -> None:
    """Every promise `ShapePlan.batches` makes: plan shapes, layout, each text exactly once."""
    by_index = dict(encoded)
    seen: list[int] = []
    for b in batches:
        assert b.shape in plan.batch_shapes()
        rows, length, slots = b.shape.as_tuple()
        kind = next(s for s in plan.shapes() if (s.length, s.slots) == (length, slots))
        filled = int((b.segment_ids[:, 0] > 0).sum())
        assert b.shape in (kind, plan.fitted(kind, filled))  # full, or the fewest rows
        for a in b.arrays():
            assert a.dtype == np.int32 and a.shape[0] == rows
        assert b.input_ids.shape == b.segment_ids.shape == b.position_ids.shape == (rows, length)
        assert b.cls_index.shape == (rows, slots)
        assert b.positions.shape == b.slots.shape == (b.n_real,)
        assert 1 <= b.n_real <= rows * slots
        real = 0
        for pos, slot in zip(b.positions.tolist(), b.slots.tolist(), strict=True):
            ids = by_index[pos]
            n = len(ids)
            assert plan.shape_for(n) == kind
            row, k = divmod(slot, slots)
            start = b.cls_index[row, k]
            np.testing.assert_array_equal(b.input_ids[row, start:start + n], ids)
            np.testing.assert_array_equal(b.position_ids[row, start:start + n], np.arange(n))
            assert (b.segment_ids[row, start:start + n] == k + 1).all()
            real += n
        assert b.real_tokens == real == int((b.segment_ids > 0).sum())
        assert (b.input_ids[b.segment_ids == 0] == PAD).all()
        assert b.computed_tokens == rows * length
        seen.extend(b.positions.tolist())
    assert sorted(seen) == sorted(by_index)


# ---- building a plan ---------------------------------------------------------------------


def test_default_plan_shapes() -> None:
    plan = ShapePlan.build()
    assert plan.pack == Shape(64, 128, 16)  # 8192 // 128 rows, 128 // 8 slots
    assert [s.length for s in plan.buckets] == [256, 512]  # buckets <= 128 are never used
    assert [s.rows for s in plan.buckets] == [32, 16]
    assert plan.shapes() == [plan.pack, *plan.buckets]
    unpacked = ShapePlan.build(pack_length=None)
    assert unpacked.pack is None
    assert tuple(s.length for s in unpacked.buckets) == DEFAULT_BOUNDARIES
    assert [s.rows for s in unpacked.buckets] == [256, 256, 128, 64, 32, 16]
    assert all(s.slots == 1 and not s.packed for s in unpacked.buckets)


@pytest.mark.parametrize(("max_length", "expected"), [
    (128, (16, 32, 64, 128)), (100, (16, 32, 64, 100)), (16, (16,)), (10, (10,)), (2, (2,)),
    (1024, (16, 32, 64, 128, 256, 512, 1024))])
def test_boundaries_clip_and_end_at_max_length(max_length: int, expected: tuple) -> None:
    plan = ShapePlan.build(max_length, pack_length=None)
    assert tuple(s.length for s in plan.buckets) == expected


def test_pack_length_is_clipped_and_max_length_short_of_it_needs_no_bucket() -> None:
    plan = ShapePlan.build(64, pack_length=128)
    assert plan.pack.length == 64 and plan.buckets == ()
    assert ShapePlan.build(128, boundaries=[8, 40]).buckets == ()
    assert [s.length for s in ShapePlan.build(128, boundaries=[8, 40],
                                              pack_length=None).buckets] == [8, 40, 128]


@pytest.mark.parametrize(("boundaries", "match"), [
    ([32, 16], "strictly increasing.*32 then 16"), ([16, 16], "strictly increasing"),
    ([0, 16], "positive integers, got 0"), ([16.5], "positive integers, got 16.5"),
    ([True], "positive integers, got True"), ([16, 1024], "boundary 1024 exceeds max_length"),
    ([], "non-empty")])
def test_bad_boundaries(boundaries: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ShapePlan.build(boundaries=boundaries)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"max_length": 1}, "max_length must be an integer >= 2, got 1"),
    ({"max_length": 128.0}, "max_length"),
    ({"max_batch_tokens": 0}, "max_batch_tokens must be an integer >= 1, got 0"),
    ({"device_count": 0}, "device_count must be an integer >= 1, got 0"),
    ({"max_batch_size": 0}, "max_batch_size must be an integer >= 1, got 0"),
    ({"pack_length": 1}, "pack_length must be an integer >= 2, got 1")])
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ShapePlan.build(**kwargs)


@pytest.mark.parametrize("device_count", [1, 3, 8])
@pytest.mark.parametrize("max_batch_tokens", [1, 100, 8192, 20000])
@pytest.mark.parametrize("pack_length", [None, 128])
def test_rows_fit_the_budget_and_split_over_devices(device_count: int, max_batch_tokens: int,
                                                    pack_length: int | None) -> None:
    plan = ShapePlan.build(max_batch_tokens=max_batch_tokens, device_count=device_count,
                           pack_length=pack_length)
    cap = max(device_count, 256 // device_count * device_count)
    for shape in plan.shapes():
        assert shape.rows % device_count == 0
        fits = max(device_count, (max_batch_tokens // shape.length) // device_count
                   * device_count)
        assert shape.rows == min(fits, cap)


def test_batch_budget_per_platform() -> None:
    assert batch_budget("cpu", 1) == 1024 and batch_budget("cpu", 8) == 8192
    assert batch_budget("gpu", 2) == batch_budget("tpu", 2) == 2 * 16384


@pytest.mark.parametrize(("length", "expected"), [
    (1, (64, 128, 16)), (128, (64, 128, 16)), (129, (32, 256, 1)), (512, (16, 512, 1))])
def test_shape_for(length: int, expected: tuple) -> None:
    assert ShapePlan.build().shape_for(length).as_tuple() == expected


@pytest.mark.parametrize("length", [0, 513, -1, 2.0])
def test_shape_for_rejects(length) -> None:
    with pytest.raises(ValueError, match="length must be an integer from 1 to 512"):
        ShapePlan.build().shape_for(length)


# ---- batches -----------------------------------------------------------------------------


def test_mixed_lengths_packed_then_buckets_shortest_first() -> None:
    plan = ShapePlan.build(128, boundaries=[16, 32, 64], max_batch_tokens=256, pack_length=16)
    lengths = [3, 16, 17, 128, 64, 65, 1, 2, 33, 100, 5, 5, 5]
    enc = _encoded(lengths)
    batches = list(plan.batches(enc, pad_id=PAD))
    _check_batches(batches, enc, plan)
    # each shape's last batch at the fewest rows that hold it: 4 packed rows of 16, 1 of 8
    # 32-token rows, 2 of 4 64-token rows, and the 128 bucket's 3 texts as 2 rows, then 1
    assert [b.shape.as_tuple() for b in batches] == [(4, 16, 2), (1, 32, 1), (2, 64, 1),
                                                      (2, 128, 1), (1, 128, 1)]
    assert [len(dict(enc)[p]) for p in batches[2].positions] == [33, 64]
    assert [len(dict(enc)[p]) for p in batches[3].positions] == [65, 100]


def test_one_text_a_row_layout_is_the_padded_batch() -> None:
    plan = ShapePlan.build(16, max_batch_tokens=64, pack_length=None)  # 4 x 16
    enc = [(0, np.array([101, 5, 102], dtype=np.int64)), (1, (101, 102))]
    (b,) = list(plan.batches(enc, pad_id=7))
    assert b.positions.tolist() == [1, 0]  # shortest first
    assert b.slots.tolist() == [0, 1] and (b.cls_index == 0).all()
    np.testing.assert_array_equal(b.input_ids[:2, :4], [[101, 102, 7, 7], [101, 5, 102, 7]])
    np.testing.assert_array_equal(b.segment_ids[:2, :4], [[1, 1, 0, 0], [1, 1, 1, 0]])
    assert (b.input_ids[2:] == 7).all() and (b.segment_ids[2:] == 0).all()


def test_windows_read_lazily_and_batches_never_span_two() -> None:
    plan = ShapePlan.build(64, max_batch_tokens=128)
    consumed: list[int] = []

    def gen():
        for i in range(100):
            consumed.append(i)
            yield i, [1, 2, 3, 4, 5][: 1 + i % 5]

    it = plan.batches(gen(), pad_id=PAD, window=10)
    first = next(it)
    assert len(consumed) == 10 and set(first.positions.tolist()) <= set(range(10))
    rest = list(it)
    for b in [first, *rest]:
        assert len({p // 10 for p in b.positions.tolist()}) == 1
    assert sum(b.n_real for b in [first, *rest]) == 100
    assert list(plan.batches([], pad_id=PAD)) == []


def test_caller_indices_need_not_be_contiguous() -> None:
    plan = ShapePlan.build(16, pack_length=None)
    (b,) = list(plan.batches([(1000, [1, 2]), (5, [1, 2, 3]), (42, [1])], pad_id=PAD))
    assert b.positions.tolist() == [42, 1000, 5]


@pytest.mark.parametrize(("enc", "match"), [
    ([(0, [1, 2]), (7, [])], "input 7 is empty"),
    ([(0, [1]), (3, list(range(1, 66)))], "input 3 has 65 tokens.*largest shape's 64"),
    ([(9, [1.5, 2.0])], "input 9: token ids must be integers"),
    ([(4, [[1, 2]])], "input 4: token ids must be a flat sequence")])
def test_bad_items_name_the_input(enc: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        list(ShapePlan.build(64).batches(enc, pad_id=PAD))


def test_bad_window_and_pad() -> None:
    plan = ShapePlan.build(64)
    with pytest.raises(ValueError, match="window must be an integer >= 1, got 0"):
        list(plan.batches([(0, [1])], pad_id=PAD, window=0))
    with pytest.raises(ValueError, match="pad_id"):
        list(plan.batches([(0, [1])], pad_id=None))


@pytest.mark.parametrize("seed", range(8))
def test_random_streams(seed: int) -> None:
    """Random plans and inputs: every promise holds, and results come back in caller order."""
    rng = np.random.default_rng(seed)
    device_count = int(rng.choice([1, 2, 3, 8]))
    max_length = int(rng.integers(2, 300))
    plan = ShapePlan.build(max_length, max_batch_tokens=int(rng.integers(1, 4000)),
                           device_count=device_count, max_batch_size=int(rng.integers(1, 64)),
                           pack_length=[None, 16, 64, 128][seed % 4])
    n = int(rng.integers(1, 400))
    lengths = np.minimum(rng.geometric(1 / 25, size=n), max_length)  # short, some at the limit
    enc = _encoded(lengths.tolist(), seed=seed)
    batches = list(plan.batches(enc, pad_id=PAD, window=int(rng.integers(1, 200))))
    _check_batches(batches, enc, plan)
    collector = OrderedCollector()
    streamed: list[np.ndarray] = []
    for b in batches:
        first_tokens = b.input_ids.ravel()[  # [n] each text's first token, as a fake "result"
            b.slots // b.shape.slots * b.shape.length + b.cls_index.ravel()[b.slots]]
        collector.add(b.positions, first_tokens)
        streamed.extend(collector.pop_ready())
    assert collector.pending == 0
    np.testing.assert_array_equal(streamed, [ids[0] for _, ids in enc])


def test_pack_rows_places_every_item_once_within_the_row() -> None:
    for seed in range(5):
        rng = np.random.default_rng(seed)
        lengths = rng.integers(2, 65, 500)
        rows = pack_rows(lengths, 64, 8)
        assert sorted(i for row in rows for i in row) == list(range(500))
        assert all(lengths[row].sum() <= 64 and len(row) <= 8 for row in rows)
        assert lengths.sum() / (64 * len(rows)) > 0.9  # longest-first fills rows well


def test_row_rungs_halve_the_rows_in_multiples_of_the_device_count() -> None:
    assert row_rungs(8, 1, 4) == [1, 2, 4, 8]
    assert row_rungs(64, 8, 4) == [8, 16, 32, 64]
    assert row_rungs(32, 4, 2) == [16, 32]
    assert row_rungs(2, 2, 4) == [2]  # no room to halve
    assert row_rungs(12, 1, 1) == [12]
    assert row_rungs(12, 4, 4) == [4, 12]  # 6 and 3 round down to 4


def test_batch_shapes_list_every_rung_of_every_shape() -> None:
    plan = ShapePlan.build(512, max_batch_tokens=1024)  # 8x128x16, then 4x256, 2x512
    assert [str(s) for s in plan.batch_shapes()] == [
        "8x128x16", "4x128x16", "2x128x16", "1x128x16", "4x256x1", "2x256x1", "1x256x1",
        "2x512x1", "1x512x1"]
    assert plan.shapes() == [plan.pack, *plan.buckets]  # full rows, one per kind of text
    assert ShapePlan.build(512, max_batch_tokens=1024, rungs=1).batch_shapes() == plan.shapes()


def test_a_shapes_last_batch_runs_at_the_fewest_rows_that_hold_it() -> None:
    plan = ShapePlan.build(512, max_batch_tokens=1024, device_count=2)  # 8x128x16, 4x256, 2x512
    # 11 packed rows of 120-token texts (8 + 3 -> 4), one 200-token text (-> 2 rows of 256)
    enc = [(i, [7] * 120) for i in range(11)] + [(11, [7] * 200)]
    batches = list(plan.batches(enc, pad_id=0))
    assert [str(b.shape) for b in batches] == ["8x128x16", "4x128x16", "2x256x1"]
    assert sorted(p for b in batches for p in b.positions.tolist()) == list(range(12))
    assert all(s in plan.batch_shapes() for s in (b.shape for b in batches))
    full = ShapePlan.build(512, max_batch_tokens=1024, device_count=2, rungs=1)
    assert [str(b.shape) for b in full.batches(enc, pad_id=0)] == [
        "8x128x16", "8x128x16", "4x256x1"]


def test_warmup_batches_one_per_batch_shape() -> None:
    plan = ShapePlan.build(512, max_batch_tokens=1024, device_count=2)
    shapes = [b.shape for b in plan.warmup_batches(PAD)]
    assert shapes == plan.batch_shapes()


# ---- order -------------------------------------------------------------------------------


def test_ordered_collector_streams_the_longest_ready_prefix() -> None:
    collector = OrderedCollector(start=3)
    collector.add(np.array([5, 4]), np.array([[50], [40]]))
    assert collector.pop_ready() == [] and collector.pending == 2
    collector.add_placeholder(6)
    collector.add(np.array([3]), np.array([[30]]))
    ready = collector.pop_ready()
    assert [None if r is None else int(r[0]) for r in ready] == [30, 40, 50, None]
    assert collector.next_index == 7
    with pytest.raises(ValueError, match="caller index 4 was already added"):
        collector.add(np.array([4]), np.array([[1]]))
    with pytest.raises(ValueError, match="pass only the real rows"):
        collector.add(np.array([7, 8]), np.array([[1]]))


# ---- the layout computes what PyTorch computes -------------------------------------------


def test_packed_and_one_a_row_batches_equal_torch_one_text_at_a_time(tiny_hf) -> None:
    import transformers
    torch_model = transformers.DistilBertForSequenceClassification.from_pretrained(tiny_hf)
    graphdef, state = nnx.split(ckpt.load_model(tiny_hf))
    # jitted (eager took 20 s), at the precision the engine runs float32 at
    packed_logits = jax.jit(lambda *a: nnx.merge(graphdef, state).packed_logits(*a))
    rng = np.random.default_rng(0)
    arrays = [np.concatenate([[2], rng.integers(5, 128, n), [3]]) for n in rng.integers(0, 60, 40)]
    enc = list(enumerate(arrays))
    for plan in (ShapePlan.build(64, max_batch_tokens=256, pack_length=32),
                 ShapePlan.build(64, max_batch_tokens=256, pack_length=None)):
        got = {}
        with jax.default_matmul_precision("highest"):
            for b in plan.batches(enc, pad_id=0):
                out = np.asarray(packed_logits(*b.arrays()))  # [B, S, C]
                got.update(zip(b.positions.tolist(), b.select(out), strict=True))
        assert sorted(got) == list(range(40))
        with torch.no_grad():
            for i, ids in enumerate(arrays):
                ref = torch_model.eval()(torch.tensor(ids)[None]).logits[0].numpy()
                assert np.abs(got[i] - ref).max() <= 1e-5


def test_fill_batch_leaves_extra_rows_empty() -> None:
    b = fill_batch(Shape(4, 8, 2), [[0, 1]], [7, 9], [np.array([2, 3]), np.array([2, 5, 3])], 0)
    assert b.positions.tolist() == [7, 9] and b.slots.tolist() == [0, 1]
    assert b.cls_index[0].tolist() == [0, 2] and b.real_tokens == 5
    assert (b.segment_ids[1:] == 0).all()


def test_step_ladder_rungs_and_their_waste() -> None:
    assert StepPlan.build(128, 32).ladder == (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
    assert StepPlan.build(128, 32, 8).ladder == (8, 16, 24, 32)  # device count times 1, 2, 3, 4
    assert StepPlan.build(128, 13).ladder == (1, 2, 3, 4, 6, 8, 12, 13)
    assert StepPlan.build(128, 1).ladder == (1,)
    assert StepPlan.build(128, 32, packed=False).ladder == (32,)
    plan = StepPlan.build(128, 512)
    for needed in range(1, 513):  # the rung a step of `needed` rows takes
        rung = next(n for n in plan.ladder if n >= needed)
        assert rung < 1.5 * needed or rung == needed
