"""Data-parallel cases, run by test_multidevice.py in a process with 8 simulated CPU devices.

Not collected directly (the file name does not start with test_): XLA_FLAGS must be set
before jax is imported, which only a fresh process guarantees.
"""

import jax
import numpy as np
import pytest

from flaxsent import Classifier
from flaxsent.core import checkpoint as ckpt
from flaxsent.core.engine import mesh_predict, pmap_predict
from tests.helpers import WORDS, random_batch

pytestmark = pytest.mark.skipif(jax.device_count() != 8, reason="needs 8 simulated devices")


def _texts(n, seed):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, rng.integers(0, 40))) for _ in range(n)]


@pytest.fixture(scope="module")
def single(tiny_flax, tmp_path_factory):
    return Classifier.from_pretrained(tiny_flax, devices=1, max_batch_tokens=512,
                                      cache_dir=tmp_path_factory.mktemp("c"))


@pytest.mark.parametrize("backend", ["mesh", "pmap"])
@pytest.mark.parametrize("n_texts", [3, 8, 77])
def test_eight_devices_equal_one(tiny_flax, tmp_path, single, backend, n_texts):
    multi = Classifier.from_pretrained(tiny_flax, backend=backend, max_batch_tokens=512,
                                       cache_dir=tmp_path)
    assert multi.engine.n_devices == 8
    assert all(shape.rows % 8 == 0 for shape in multi.plan.shapes())
    texts = _texts(n_texts, seed=n_texts)
    np.testing.assert_allclose(multi.logits(texts), single.logits(texts), atol=1e-6)
    assert set(multi.compiled_shapes) <= set(multi.shapes())


def test_batch_is_sharded_over_the_mesh(tiny_flax, tmp_path):
    clf = Classifier.from_pretrained(tiny_flax, cache_dir=tmp_path, max_batch_tokens=512)
    batch = next(clf.plan.warmup_batches(clf.tokenizer.pad_id))
    out = clf.engine.run(batch)  # [B, S, C]
    assert len(out.sharding.device_set) == 8
    assert out.sharding.shard_shape(out.shape) == (batch.shape.rows // 8, *out.shape[1:])


@pytest.mark.parametrize("batch", [3, 8, 13])
def test_pmap_predict_equals_mesh_and_plain_call(tiny_flax, batch):
    model = ckpt.load_model(tiny_flax)
    ids, mask = random_batch(np.random.default_rng(batch), model.config.vocab_size, batch, 12)
    plain = np.asarray(model(ids, mask))
    np.testing.assert_allclose(pmap_predict(model, ids, mask), plain, atol=1e-6)
    np.testing.assert_allclose(mesh_predict(model, ids, mask), plain, atol=1e-6)


def test_training_on_eight_devices_equals_one(tiny_hf):
    """The same steps data-parallel over 8 devices: the same losses and the same model."""
    from flaxsent.core.plan import StepPlan
    from flaxsent.train.recipe import Recipe
    from flaxsent.train.step import TrainStep

    rng = np.random.default_rng(0)
    steps = []
    for _ in range(3):
        arrays = [np.concatenate([[2], rng.integers(5, 128, int(k)), [3]]).astype(np.int32)
                  for k in rng.integers(0, 40, 16)]
        steps.append((arrays, rng.integers(0, 2, 16).astype(np.int32)))
    results = []
    for devices in (1, 8):
        model = ckpt.load_model(tiny_hf)
        trainer = TrainStep(model, Recipe(learning_rate=1e-3, warmup_steps=0, total_steps=3),
                            devices=devices, dropout=False)
        plan = StepPlan.build(64, 16, devices)
        params, state = trainer.init(model)
        losses = []
        for arrays, labels in steps:
            batch = plan.batch(list(range(16)), arrays, pad_id=0)
            assert batch.shape.rows % devices == 0
            params, state, loss, _ = trainer(params, state, batch, labels[batch.positions],
                                             jax.random.key(0))
            losses.append(float(loss))
        ids, mask = random_batch(np.random.default_rng(5), 128, 6, 20)
        with jax.default_matmul_precision("highest"):
            results.append((losses, np.asarray(trainer.model(params)(ids, mask))))
    np.testing.assert_allclose(results[0][0], results[1][0], atol=1e-6)
    np.testing.assert_allclose(results[0][1], results[1][1], atol=1e-5)
