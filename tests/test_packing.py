"""Sequence packing: every text placed once, rows within bounds, logits equal to PyTorch's."""

import jax
import numpy as np
import pytest
import torch

from flaxsent import checkpoint as ckpt
from flaxsent.packing import PackPlan, iter_packed, pack_rows


@pytest.mark.parametrize("seed", range(5))
def test_pack_rows_places_every_item_once_within_the_row(seed):
    """Every item exactly once; rows within length and slot limits."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 65, 500)
    rows = pack_rows(lengths, 64, 8)
    placed = sorted(i for row in rows for i in row)
    assert placed == list(range(500))
    assert all(lengths[row].sum() <= 64 and len(row) <= 8 for row in rows)
    # longest-first filling is near-optimal on short texts
    assert lengths.sum() / (64 * len(rows)) > 0.9


def test_pack_plan_rows_split_over_devices():
    assert PackPlan.build(128, 4096, device_count=1).shape() == (32, 128, 16)
    assert PackPlan.build(128, 4096, device_count=3).rows == 30
    assert PackPlan.build(128, 64, device_count=8).rows == 8  # at least one row per device
    with pytest.raises(ValueError):
        PackPlan.build(1, 4096)


def test_iter_packed_layout():
    arrays = [np.array([2, 10, 11, 3]), np.array([2, 3]), np.array([2, 12, 13, 14, 3])]
    (batch,) = iter_packed([7, 8, 9], arrays, PackPlan(row_length=8, rows=2, slots=4), pad_id=0)
    assert batch.input_ids.shape == (2, 8) and batch.cls_index.shape == (2, 4)
    assert batch.real_tokens == 11 and batch.computed_tokens == 16
    for pos, slot in zip(batch.positions, batch.slots, strict=True):
        row, k = divmod(int(slot), 4)
        start = batch.cls_index[row, k]
        ids = arrays[pos - 7]
        np.testing.assert_array_equal(batch.input_ids[row, start:start + len(ids)], ids)
        np.testing.assert_array_equal(batch.position_ids[row, start:start + len(ids)],
                                      np.arange(len(ids)))
        assert (batch.segment_ids[row, start:start + len(ids)] == k + 1).all()
    assert (batch.segment_ids[batch.input_ids == 0] == 0).all()


def test_packed_logits_equal_torch_one_text_at_a_time(tiny_hf):
    import transformers
    torch_model = transformers.DistilBertForSequenceClassification.from_pretrained(tiny_hf)
    model = ckpt.load_model(tiny_hf)
    rng = np.random.default_rng(0)
    arrays = [np.concatenate([[2], rng.integers(5, 128, n), [3]]) for n in
              rng.integers(0, 30, 40)]
    plan = PackPlan(row_length=64, rows=4, slots=8)
    got = {}
    with jax.default_matmul_precision("highest"):
        for batch in iter_packed(list(range(40)), arrays, plan, pad_id=0):
            out = np.asarray(model.packed_logits(batch.input_ids, batch.segment_ids,
                                                 batch.position_ids, batch.cls_index))
            got.update(zip(batch.positions.tolist(), batch.select(out), strict=True))
    assert sorted(got) == list(range(40))
    with torch.no_grad():
        for i, ids in enumerate(arrays):
            ref = torch_model.eval()(torch.tensor(ids)[None]).logits[0].numpy()
            assert np.abs(got[i] - ref).max() <= 1e-5
