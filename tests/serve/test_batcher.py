"""Batcher: concurrent requests share packed batches; each gets its own rows, in order."""

import itertools
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from flaxsent import Classifier
from flaxsent.core.plan import Shape, pack_rows
from flaxsent.errors import NonFiniteLogitsError
from flaxsent.serve.batcher import Batcher, EngineError
from tests.helpers import WORDS, poisoned


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def clf(tiny_flax, cache):
    # packed rows of 16 tokens (8 rows a batch) and buckets of 32 and 64: both kinds of batch
    return Classifier.from_pretrained(tiny_flax, cache_dir=cache, max_batch_tokens=128,
                                      pack_length=16)


def _requests(n, seed, max_texts=6, max_words=30):
    rng = np.random.default_rng(seed)
    return [[" ".join(rng.choice(WORDS, rng.integers(0, max_words)))
             for _ in range(rng.integers(1, max_texts + 1))] for _ in range(n)]


def _ids(clf, texts):
    return clf.tokenizer.encode_batch(texts)[0]


def test_concurrent_requests_get_their_own_rows_in_order(clf):
    requests = _requests(40, seed=0)
    seen = []
    batcher = Batcher(clf, max_wait_s=0.05, on_batch=seen.append)
    batcher.start()
    try:
        assert batcher.wait_ready(120)
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda texts: batcher.submit(_ids(clf, texts)).result(60),
                                    requests))
    finally:
        batcher.close()
    for texts, result in zip(requests, results, strict=True):
        np.testing.assert_allclose(result.logits, clf.logits(texts), atol=1e-5)
        assert result.queue_s >= 0 and result.inference_s > 0
    n_texts = sum(map(len, requests))
    assert sum(b.n_real for b in seen) == n_texts  # every text ran exactly once
    assert {b.shape.slots for b in seen} == {2, 1}  # packed rows and buckets both used
    assert any(r.batch_texts > len(t) for r, t in zip(results, requests, strict=True))  # shared


def test_a_group_fills_one_packed_batch_and_the_rest_waits_its_turn(clf):
    """Requests queued while the engine is busy go in groups that each fill one packed batch
    (the next request would not have fitted), never spilling into a second batch."""
    requests = _requests(60, seed=1, max_words=10)  # short: every text is packed
    seen = []
    batcher = Batcher(clf, max_wait_s=10.0, on_batch=seen.append)
    ids = [_ids(clf, texts) for texts in requests]
    futures = [batcher.submit(x) for x in ids]  # all queued before the engine starts
    batcher.start()
    batcher.close(timeout=120)  # everything is queued already: no waiting for more
    results = [f.result(0) for f in futures]
    groups, at = [], 0  # consecutive requests, as the results say they ran together
    while at < len(results):
        size, taken = results[at].batch_texts, 0
        groups.append([])
        while taken < size:
            groups[-1].append(at)
            taken += len(requests[at])
            at += 1
        assert taken == size
    pack = clf.plan.pack
    assert [b.n_real for b in seen] == [sum(len(requests[i]) for i in g) for g in groups]
    assert all(b.shape == pack for b in seen[:-1]) and len(groups) > 2  # full groups: full rows
    for group, nxt in itertools.pairwise(groups):
        lengths = [len(t) for i in [*group, nxt[0]] for t in ids[i]]
        assert len(pack_rows(np.asarray(lengths), pack.length, pack.slots)) > pack.rows
    for texts, result in zip(requests, results, strict=True):
        np.testing.assert_allclose(result.logits, clf.logits(texts), atol=1e-5)


def test_close_finishes_what_is_queued_and_refuses_the_rest(clf):
    requests = _requests(5, seed=2)
    batcher = Batcher(clf, max_wait_s=30.0)  # would wait long for company, but close hurries
    futures = [batcher.submit(_ids(clf, texts)) for texts in requests]
    batcher.start()
    batcher.close(timeout=120)
    for texts, future in zip(requests, futures, strict=True):
        np.testing.assert_allclose(future.result(0).logits, clf.logits(texts), atol=1e-5)
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(_ids(clf, ["late"]))


def test_hurry_dispatches_a_request_already_waiting_for_company(clf):
    """Draining: a request the engine holds while it waits for others goes at once, not after
    max_wait (an hour here; the future's timeout only bounds a failing run)."""
    batcher = Batcher(clf, max_wait_s=3600)
    batcher.start()
    try:
        assert batcher.wait_ready(120)
        future = batcher.submit(_ids(clf, ["alone"]))
        deadline = time.monotonic() + 60
        while batcher.queued and time.monotonic() < deadline:  # until the engine thread has
            time.sleep(0.01)  # taken it, and waits for company
        batcher.hurry()
        np.testing.assert_allclose(future.result(60).logits, clf.logits(["alone"]), atol=1e-5)
    finally:
        batcher.close(timeout=120)


def test_a_lone_request_runs_in_the_smallest_packed_shape_that_holds_it(clf):
    seen = []
    batcher = Batcher(clf, max_wait_s=0.0, on_batch=seen.append)
    batcher.start()
    try:
        assert batcher.wait_ready(120)
        for texts in (["a film"], ["a film"] * 3, ["the movie was great and fun"] * 7):
            rows = len(pack_rows(np.asarray([len(x) for x in _ids(clf, texts)]), 16, 2))
            result = batcher.submit(_ids(clf, texts)).result(60)
            np.testing.assert_allclose(result.logits, clf.logits(texts), atol=1e-5)
            want = min(r for r in (1, 2, 4, 8) if r >= rows)
            assert seen[-1].shape == Shape(want, 16, 2), (rows, seen[-1].shape)
    finally:
        batcher.close()
    assert [b.shape.rows for b in seen] == [1, 2, 4]


def test_a_failed_batch_fails_its_requests_only(clf, monkeypatch):
    batcher = Batcher(clf, max_wait_s=0.0)
    batcher.start()
    assert batcher.wait_ready(120)
    run = clf.engine.run
    calls = []

    def failing_once(batch):
        calls.append(batch)
        if len(calls) == 1:
            raise MemoryError("device out of memory")
        return run(batch)

    monkeypatch.setattr(clf.engine, "run", failing_once)
    try:
        with pytest.raises(EngineError, match="MemoryError: device out of memory"):
            batcher.submit(_ids(clf, ["first"])).result(60)
        later = batcher.submit(_ids(clf, ["second", "third"])).result(60)
    finally:
        batcher.close()
    np.testing.assert_allclose(later.logits, clf.logits(["second", "third"]), atol=1e-5)


def test_warmup_compiles_every_shape_before_ready(tiny_flax, cache):
    fresh = Classifier.from_pretrained(tiny_flax, cache_dir=cache, max_batch_tokens=128,
                                       pack_length=16)
    batcher = Batcher(fresh)
    assert not batcher.ready
    batcher.start()
    try:
        assert batcher.wait_ready(120)
        # the plan's shapes, each also at rungs of 4, 2 and 1 rows (the packed one has 8)
        assert {(8, 16, 2), (4, 16, 2), (2, 16, 2), (1, 16, 2)} <= set(fresh.shapes())
        assert sorted(fresh.compiled_shapes) == sorted(fresh.shapes())
        batcher.submit(_ids(fresh, ["a film", "great " * 40])).result(60)
        assert len(fresh.compiled_shapes) == len(fresh.shapes())  # nothing compiled after
    finally:
        batcher.close()


def test_a_failed_warmup_is_reported_and_fails_queued_requests(clf, monkeypatch):
    monkeypatch.setattr(clf, "warmup", lambda: (_ for _ in ()).throw(RuntimeError("no XLA")))
    batcher = Batcher(clf)
    future = batcher.submit(_ids(clf, ["queued early"]))
    batcher.start()
    with pytest.raises(EngineError, match="warm-up failed: RuntimeError: no XLA"):
        future.result(60)
    batcher.close(timeout=60)
    assert not batcher.ready and "no XLA" in batcher.warmup_error
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(_ids(clf, ["late"]))


def test_an_empty_request_needs_no_engine(clf):
    result = Batcher(clf).submit([]).result(0)
    assert result.logits.shape == (0, clf.config.num_labels)


# ---- one stream over the engine: the batcher and the Classifier agree --------------------------

def test_the_batcher_and_the_classifier_agree_on_logits_for_the_same_texts(clf):
    texts = [t for request in _requests(6, seed=3, max_texts=8, max_words=60) for t in request]
    batcher = Batcher(clf, max_wait_s=0.0)
    batcher.start()
    try:
        assert batcher.wait_ready(120)
        served = batcher.submit(_ids(clf, texts)).result(60).logits
    finally:
        batcher.close()
    assert served.dtype == np.float32 and served.shape == (len(texts), clf.config.num_labels)
    np.testing.assert_allclose(served, clf.logits(texts), atol=1e-5)


def test_non_finite_logits_fail_the_request_as_the_classifier_raises_them(tiny_flax):
    """The batcher reports NaN logits through the Classifier's one check: the same error for
    the same texts (index within the request), and only the request that has them fails."""
    poisoned_clf = poisoned(tiny_flax, "awful")  # only texts with 'awful' give NaN
    texts = ["good fun", "awful plot", "fine", "so awful"]
    with pytest.raises(NonFiniteLogitsError) as streamed:
        list(poisoned_clf.stream_logits(texts))
    batcher = Batcher(poisoned_clf, max_wait_s=10.0)
    bad = batcher.submit(_ids(poisoned_clf, texts))
    good = batcher.submit(_ids(poisoned_clf, ["good fun", "fine"]))  # queued: one group
    batcher.start()
    batcher.close(timeout=120)
    with pytest.raises(NonFiniteLogitsError) as served:
        bad.result(0)
    assert served.value.index == streamed.value.index == 1
    assert served.value.others == streamed.value.others == 1  # 'so awful' too
    assert np.isnan(served.value.logits).all() and np.isnan(streamed.value.logits).all()
    assert str(served.value) == str(streamed.value)
    assert good.result(0).batch_texts == len(texts) + 2  # ran with the failing request
    np.testing.assert_allclose(good.result(0).logits, poisoned_clf.logits(["good fun", "fine"]),
                               atol=1e-5)
