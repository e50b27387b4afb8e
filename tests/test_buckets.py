"""Tests for flaxsent.buckets: plan construction, batching, padding, and order restoration."""

from __future__ import annotations

import numpy as np
import pytest

from flaxsent.buckets import (
    DEFAULT_BOUNDARIES,
    Batch,
    BucketPlan,
    OrderedCollector,
    iter_batches,
    padding_efficiency,
    restore_order,
)

PAD = 0


def _encoded(lengths: list[int], seed: int = 0) -> list[tuple[int, list[int]]]:
    """Caller-indexed token lists of the given lengths, with ids that are never the pad id."""
    rng = np.random.default_rng(seed)
    return [(i, rng.integers(1, 30000, size=n).tolist()) for i, n in enumerate(lengths)]


def _check_batches(
    batches: list[Batch], encoded: list[tuple[int, list[int]]], plan: BucketPlan
) -> None:
    """Assert every structural promise iter_batches makes about its output."""
    by_index = dict(encoded)
    seen: list[int] = []
    shapes = set(plan.shapes())
    for b in batches:
        size, length = b.input_ids.shape
        assert (size, length) in shapes
        assert (size, length) == plan.shapes()[b.bucket]
        assert b.input_ids.dtype == np.int32
        assert b.attention_mask.dtype == np.int32
        assert b.attention_mask.shape == (size, length)
        assert b.positions.dtype == np.int64
        assert b.positions.shape == (b.n_real,)
        assert 1 <= b.n_real <= size
        real = 0
        for r, pos in enumerate(b.positions.tolist()):
            ids = by_index[pos]
            n = len(ids)
            assert plan.bucket_index(n) == b.bucket
            np.testing.assert_array_equal(b.input_ids[r, :n], ids)
            assert (b.input_ids[r, n:] == PAD).all()
            assert (b.attention_mask[r, :n] == 1).all()
            assert (b.attention_mask[r, n:] == 0).all()
            real += n
        assert b.real_tokens == real
        assert b.computed_tokens == size * length
        filler_ids = b.input_ids[b.n_real :]
        filler_mask = b.attention_mask[b.n_real :]
        assert (filler_ids == PAD).all()
        assert (filler_mask[:, 0] == 1).all()
        assert (filler_mask[:, 1:] == 0).all()
        assert (b.attention_mask.sum(axis=1) > 0).all()  # no all-zero mask row
        seen.extend(b.positions.tolist())
    assert sorted(seen) == sorted(by_index)
    assert len(seen) == len(set(seen))


# --- BucketPlan.build ------------------------------------------------------------------------


def test_build_defaults() -> None:
    plan = BucketPlan.build()
    assert plan.boundaries == DEFAULT_BOUNDARIES
    assert plan.batch_sizes == (256, 256, 128, 64, 32, 16)
    assert plan.max_length == 512
    assert plan.shapes() == list(zip(plan.batch_sizes, plan.boundaries, strict=True))


@pytest.mark.parametrize(
    ("max_length", "expected"),
    [
        (128, (16, 32, 64, 128)),
        (100, (16, 32, 64, 100)),
        (16, (16,)),
        (10, (10,)),
        (2, (2,)),
        (1024, (16, 32, 64, 128, 256, 512, 1024)),
    ],
)
def test_build_clips_and_appends_max_length(max_length: int, expected: tuple[int, ...]) -> None:
    assert BucketPlan.build(max_length=max_length).boundaries == expected


def test_build_user_boundaries() -> None:
    assert BucketPlan.build(max_length=128, boundaries=[8, 40]).boundaries == (8, 40, 128)
    assert BucketPlan.build(max_length=128, boundaries=(64, 128)).boundaries == (64, 128)
    assert BucketPlan.build(max_length=128, boundaries=[np.int64(32)]).boundaries == (32, 128)


@pytest.mark.parametrize(
    ("boundaries", "match"),
    [
        ([32, 16], "strictly increasing.*32 then 16"),
        ([16, 16], "strictly increasing"),
        ([0, 16], "positive integers, got 0"),
        ([-4], "positive integers, got -4"),
        ([16.5], "positive integers, got 16.5"),
        ([True], "positive integers, got True"),
        (["16"], "positive integers"),
        ([16, 1024], "boundary 1024 exceeds max_length=512"),
        ([], "non-empty"),
    ],
)
def test_build_rejects_bad_boundaries(boundaries: list[object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BucketPlan.build(boundaries=boundaries)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_length": 1}, "max_length must be an integer >= 2, got 1"),
        ({"max_length": 0}, "max_length"),
        ({"max_batch_tokens": 0}, "max_batch_tokens must be an integer >= 1, got 0"),
        ({"device_count": 0}, "device_count must be an integer >= 1, got 0"),
        ({"max_batch_size": 0}, "max_batch_size must be an integer >= 1, got 0"),
        ({"max_length": 128.0}, "max_length"),
    ],
)
def test_build_rejects_bad_args(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BucketPlan.build(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("device_count", [1, 3, 8])
@pytest.mark.parametrize("max_batch_tokens", [1, 100, 8192, 20000])
def test_batch_sizes_are_device_multiples(device_count: int, max_batch_tokens: int) -> None:
    plan = BucketPlan.build(max_batch_tokens=max_batch_tokens, device_count=device_count)
    for size, length in plan.shapes():
        assert size % device_count == 0
        assert size >= device_count
        assert size <= max(device_count, 256)
        expected = max(device_count, (max_batch_tokens // length) // device_count * device_count)
        cap = max(device_count, 256 // device_count * device_count)
        assert size == min(expected, cap)


def test_batch_sizes_examples() -> None:
    plan = BucketPlan.build(device_count=3)
    # 8192 // 16 = 512 -> cap 256 -> 255; 8192 // 64 = 128 -> 126; 8192 // 512 = 16 -> 15
    assert plan.batch_sizes == (255, 255, 126, 63, 30, 15)


def test_batch_size_cap() -> None:
    plan = BucketPlan.build(max_batch_size=20, device_count=8)
    assert plan.batch_sizes == (16,) * 6  # the cap 20 rounds down to 16; 8192 // 512 = 16
    assert BucketPlan.build(max_batch_size=100).batch_sizes == (100, 100, 100, 64, 32, 16)
    # A cap below the device count still gives one row per device.
    assert set(BucketPlan.build(max_batch_size=3, device_count=8).batch_sizes) == {8}


def test_small_token_budget_gives_device_count_rows() -> None:
    assert set(BucketPlan.build(max_batch_tokens=1).batch_sizes) == {1}
    assert set(BucketPlan.build(max_batch_tokens=10, device_count=8).batch_sizes) == {8}


def test_direct_construction_is_validated() -> None:
    with pytest.raises(ValueError, match="one batch size per boundary"):
        BucketPlan(boundaries=(16, 32), batch_sizes=(4,))
    with pytest.raises(ValueError, match="strictly increasing"):
        BucketPlan(boundaries=(32, 16), batch_sizes=(4, 4))
    with pytest.raises(ValueError, match="at least one boundary"):
        BucketPlan(boundaries=(), batch_sizes=())


# --- bucket_index ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "bucket"), [(1, 0), (16, 0), (17, 1), (32, 1), (33, 2), (257, 5), (512, 5)]
)
def test_bucket_index(length: int, bucket: int) -> None:
    assert BucketPlan.build().bucket_index(length) == bucket


@pytest.mark.parametrize(("length", "match"), [(513, "513 exceeds"), (0, "got 0"), (-1, "got -1")])
def test_bucket_index_errors(length: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BucketPlan.build().bucket_index(length)


# --- iter_batches ----------------------------------------------------------------------------


def test_iter_batches_mixed_lengths() -> None:
    plan = BucketPlan.build(max_length=128, max_batch_tokens=256)  # sizes (16, 8, 4, 2)
    lengths = [3, 16, 17, 128, 64, 65, 1, 2, 33, 100, 5, 5, 5]
    enc = _encoded(lengths)
    batches = list(iter_batches(enc, plan, pad_id=PAD))
    _check_batches(batches, enc, plan)
    # Within a window, rows are sorted by length and grouped by bucket.
    assert [b.bucket for b in batches] == sorted(b.bucket for b in batches)
    first = batches[0]
    assert [len(dict(enc)[p]) for p in first.positions] == [1, 2, 3, 5, 5, 5, 16]


def test_input_smaller_than_one_batch_gives_one_padded_batch() -> None:
    plan = BucketPlan.build(max_length=64, max_batch_tokens=512)  # bucket 0: 32 rows x 16
    enc = _encoded([4, 7, 12])
    batches = list(iter_batches(enc, plan, pad_id=PAD))
    assert len(batches) == 1
    (b,) = batches
    assert b.input_ids.shape == (32, 16)
    assert b.n_real == 3
    assert b.real_tokens == 23
    _check_batches(batches, enc, plan)


def test_stable_sort_keeps_caller_order_for_equal_lengths() -> None:
    plan = BucketPlan.build(max_length=32)
    enc = _encoded([8] * 10)
    (b,) = list(iter_batches(enc, plan, pad_id=PAD))
    assert b.positions.tolist() == list(range(10))


def test_window_smaller_than_input_covers_everything() -> None:
    plan = BucketPlan.build(max_length=64, max_batch_tokens=128)  # sizes (8, 4, 2)
    rng = np.random.default_rng(1)
    enc = _encoded(rng.integers(1, 65, size=101).tolist())
    batches = list(iter_batches(enc, plan, pad_id=PAD, window=7))
    _check_batches(batches, enc, plan)
    # Each window's batches only hold that window's items.
    for b in batches:
        assert len({int(p) // 7 for p in b.positions}) == 1


def test_window_reads_lazily() -> None:
    plan = BucketPlan.build(max_length=32)
    consumed: list[int] = []

    def gen():
        for i in range(100):
            consumed.append(i)
            yield i, [1, 2, 3]

    it = iter_batches(gen(), plan, pad_id=PAD, window=10)
    first = next(it)
    assert first.positions.tolist() == list(range(10))
    assert len(consumed) == 10
    rest = list(it)
    assert sum(b.n_real for b in rest) == 90


def test_window_exact_multiple_and_empty_input() -> None:
    plan = BucketPlan.build(max_length=32)
    enc = _encoded([5] * 20)
    batches = list(iter_batches(enc, plan, pad_id=PAD, window=10))
    assert [b.n_real for b in batches] == [10, 10]
    assert list(iter_batches([], plan, pad_id=PAD)) == []


def test_custom_pad_id_and_numpy_inputs() -> None:
    plan = BucketPlan.build(max_length=16, max_batch_tokens=64)  # 4 x 16
    enc = [(0, np.array([101, 5, 102], dtype=np.int64)), (1, (101, 102))]
    (b,) = list(iter_batches(enc, plan, pad_id=7))
    assert b.positions.tolist() == [1, 0]  # shortest first
    np.testing.assert_array_equal(b.input_ids[0, :3], [101, 102, 7])
    np.testing.assert_array_equal(b.input_ids[1, :4], [101, 5, 102, 7])
    assert (b.input_ids[2:] == 7).all()
    np.testing.assert_array_equal(b.attention_mask[2:, 0], [1, 1])


def test_caller_indices_need_not_be_contiguous() -> None:
    plan = BucketPlan.build(max_length=16)
    enc = [(1000, [1, 2]), (5, [1, 2, 3]), (42, [1])]
    (b,) = list(iter_batches(enc, plan, pad_id=PAD))
    assert b.positions.tolist() == [42, 1000, 5]


@pytest.mark.parametrize(
    ("enc", "match"),
    [
        ([(0, [1, 2]), (7, [])], "input 7 is empty"),
        ([(0, [1]), (3, list(range(1, 66)))], "input 3 has 65 tokens.*largest bucket 64"),
        ([(9, [1.5, 2.0])], "input 9: token ids must be integers"),
        ([(4, [[1, 2]])], "input 4: token ids must be a flat sequence"),
    ],
)
def test_iter_batches_errors_name_the_input(
    enc: list[tuple[int, list[object]]], match: str
) -> None:
    plan = BucketPlan.build(max_length=64)
    with pytest.raises(ValueError, match=match):
        list(iter_batches(enc, plan, pad_id=PAD))  # type: ignore[arg-type]


def test_iter_batches_rejects_bad_window_and_pad() -> None:
    plan = BucketPlan.build(max_length=64)
    with pytest.raises(ValueError, match="window must be an integer >= 1, got 0"):
        list(iter_batches([(0, [1])], plan, pad_id=PAD, window=0))
    with pytest.raises(ValueError, match="pad_id"):
        list(iter_batches([(0, [1])], plan, pad_id=None))  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(8))
def test_random_property(seed: int) -> None:
    rng = np.random.default_rng(seed)
    device_count = int(rng.choice([1, 2, 3, 8]))
    max_length = int(rng.integers(2, 300))
    plan = BucketPlan.build(
        max_length=max_length,
        max_batch_tokens=int(rng.integers(1, 4000)),
        device_count=device_count,
        max_batch_size=int(rng.integers(1, 64)),
    )
    n = int(rng.integers(1, 400))
    # Skewed towards short inputs like real sentences, with some at exactly the limit.
    lengths = np.minimum(rng.geometric(1 / 25, size=n), max_length)
    enc = _encoded(lengths.tolist(), seed=seed)
    batches = list(iter_batches(enc, plan, pad_id=PAD, window=int(rng.integers(1, 200))))
    _check_batches(batches, enc, plan)
    for b in batches:
        assert b.input_ids.shape[0] % device_count == 0
    # Put a per-row "result" (the row's first token) back in caller order both ways.
    firsts = [b.input_ids[: b.n_real, 0] for b in batches]
    expected = np.array([ids[0] for _, ids in enc])
    restored = restore_order([b.positions for b in batches], firsts, n)
    np.testing.assert_array_equal(restored, expected)
    collector = OrderedCollector()
    streamed: list[np.ndarray] = []
    for b, rows in zip(batches, firsts, strict=True):
        collector.add(b.positions, rows)
        streamed.extend(collector.pop_ready())
    assert collector.pending == 0
    np.testing.assert_array_equal(np.array(streamed), expected)


# --- order restoration -----------------------------------------------------------------------


def test_restore_order_scatters_rows() -> None:
    out = restore_order(
        [np.array([2, 0]), np.array([1])],
        [np.array([[2.0, 2.5], [0.0, 0.5]]), np.array([[1.0, 1.5]])],
        3,
    )
    np.testing.assert_array_equal(out, [[0.0, 0.5], [1.0, 1.5], [2.0, 2.5]])
    assert restore_order([], [], 0).shape == (0,)


@pytest.mark.parametrize(
    ("positions", "n", "match"),
    [
        ([[0, 1], [1]], 3, r"duplicated: \[1\]"),
        ([[0], [2]], 3, r"missing: \[1\]"),
        ([[0], [3]], 2, "caller index 3 is out of range for n=2"),
        ([[0], [-1]], 2, "caller index -1 is out of range"),
    ],
)
def test_restore_order_errors(positions: list[list[int]], n: int, match: str) -> None:
    rows = [np.zeros((len(p), 2)) for p in positions]
    with pytest.raises(ValueError, match=match):
        restore_order([np.array(p) for p in positions], rows, n)


def test_restore_order_rejects_filler_rows() -> None:
    with pytest.raises(ValueError, match=r"outputs\[: batch.n_real\]"):
        restore_order([np.array([0])], [np.zeros((4, 2))], 1)
    with pytest.raises(ValueError, match="missing"):
        restore_order([], [], 2)


def test_ordered_collector_streams_longest_ready_prefix() -> None:
    c = OrderedCollector()
    c.add(np.array([2, 3]), np.array([[20], [30]]))
    assert c.pop_ready() == []
    assert c.pending == 2
    c.add(np.array([0]), np.array([[0]]))
    assert [r.tolist() for r in c.pop_ready()] == [[0]]
    assert c.next_index == 1
    c.add(np.array([1, 5]), np.array([[10], [50]]))
    assert [r.tolist() for r in c.pop_ready()] == [[10], [20], [30]]
    assert c.pending == 1  # only the out-of-order row is held
    c.add(np.array([4]), np.array([[40]]))
    assert [r.tolist() for r in c.pop_ready()] == [[40], [50]]
    assert c.pending == 0
    assert c.pop_ready() == []


def test_ordered_collector_start_and_duplicates() -> None:
    c = OrderedCollector(start=10)
    c.add(np.array([10]), np.array([1.0]))
    assert [float(r) for r in c.pop_ready()] == [1.0]
    with pytest.raises(ValueError, match="caller index 10 was already added"):
        c.add(np.array([10]), np.array([1.0]))
    c.add(np.array([12]), np.array([1.0]))
    with pytest.raises(ValueError, match="caller index 12 was already added"):
        c.add(np.array([12]), np.array([1.0]))
    with pytest.raises(ValueError, match="pass only the real rows"):
        c.add(np.array([11]), np.zeros((4,)))
    with pytest.raises(ValueError, match="start"):
        OrderedCollector(start=-1)


# --- padding efficiency ----------------------------------------------------------------------


def test_padding_efficiency() -> None:
    assert padding_efficiency(25, 100) == 0.25
    assert padding_efficiency(100, 100) == 1.0
    assert padding_efficiency(0, 0) == 1.0
    with pytest.raises(ValueError, match="real_tokens=5, computed_tokens=4"):
        padding_efficiency(5, 4)
    with pytest.raises(ValueError, match="real_tokens=-1"):
        padding_efficiency(-1, 4)


def test_padding_efficiency_of_batches() -> None:
    plan = BucketPlan.build(max_length=32, max_batch_tokens=64)  # (4 x 16), (2 x 32)
    enc = _encoded([4, 4, 20])
    batches = list(iter_batches(enc, plan, pad_id=PAD))
    real = sum(b.real_tokens for b in batches)
    computed = sum(b.computed_tokens for b in batches)
    assert (real, computed) == (28, 4 * 16 + 2 * 32)
    assert padding_efficiency(real, computed) == pytest.approx(28 / 128)
