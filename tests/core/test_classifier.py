"""Classifier: pipeline-identical outputs, caller order, compile counts, bad input."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import transformers

from flaxsent import Classifier
from flaxsent.core.classifier import check_finite, default_precision, length_limit
from flaxsent.errors import FlaxsentError, NonFiniteLogitsError
from tests.helpers import WORDS, poisoned

TEXTS = ["the movie was great", "awful acting , boring plot", "", "fun !",
         "i love this film and the story", "not good", "brilliant " * 20, "the end"]


@pytest.fixture(scope="module")
def clf(tiny_flax, tmp_path_factory):
    return Classifier.from_pretrained(tiny_flax, cache_dir=tmp_path_factory.mktemp("cache"),
                                      max_batch_tokens=256, max_batch_size=8)


@pytest.fixture(scope="module")
def pipe(tiny_hf):
    model = transformers.DistilBertForSequenceClassification.from_pretrained(tiny_hf).eval()
    tok = transformers.AutoTokenizer.from_pretrained(tiny_hf)
    return transformers.pipeline("text-classification", model=model, tokenizer=tok,
                                 device="cpu")


def _random_texts(n, seed=0, max_words=40):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, rng.integers(0, max_words))) for _ in range(n)]


def _assert_same(ours, theirs):
    if isinstance(theirs, dict):
        assert ours["label"] == theirs["label"]
        assert ours["score"] == pytest.approx(theirs["score"], abs=1e-5)
    else:
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs, strict=True):
            _assert_same(a, b)


@pytest.mark.parametrize("kwargs", [{}, {"top_k": 1}, {"top_k": None}, {"top_k": 2},
                                    {"function_to_apply": "sigmoid"},
                                    {"function_to_apply": "none", "top_k": None}])
def test_matches_transformers_pipeline(clf, pipe, kwargs):
    ours = clf(TEXTS, **kwargs)
    # one documented difference: top_k=1 gives a dict per input, the pipeline's default form
    theirs = pipe(TEXTS, **{k: v for k, v in kwargs.items() if (k, v) != ("top_k", 1)})
    _assert_same(ours, theirs)


def test_single_string_like_the_pipeline(clf, pipe):
    out = clf("great fun")
    assert isinstance(out, list) and len(out) == 1 and set(out[0]) == {"label", "score"}
    _assert_same(out, pipe("great fun"))
    _assert_same(clf("great fun", top_k=None), pipe("great fun", top_k=None))


def test_logits_match_torch(clf, tiny_hf):
    texts = _random_texts(50, seed=1)
    model = transformers.DistilBertForSequenceClassification.from_pretrained(tiny_hf).eval()
    tok = transformers.AutoTokenizer.from_pretrained(tiny_hf)
    enc = tok(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        ref = model(**enc).logits.numpy()
    out = clf.logits(texts)
    assert out.dtype == np.float32 and out.shape == (50, 2)
    assert np.abs(out - ref).max() <= 1e-5


def test_caller_order_across_buckets_and_windows(tiny_flax, tmp_path):
    small_window = Classifier.from_pretrained(tiny_flax, cache_dir=tmp_path, window=7,
                                              max_batch_tokens=128, max_batch_size=4)
    texts = _random_texts(60, seed=2)
    expected = np.stack([small_window.logits([t])[0] for t in texts])
    np.testing.assert_allclose(small_window.logits(texts), expected, atol=1e-6)


@pytest.mark.parametrize("pack_length", [None, 24])
def test_compiles_once_per_shape(tiny_flax, tmp_path, pack_length):
    clf = Classifier.from_pretrained(tiny_flax, cache_dir=tmp_path, max_batch_tokens=256,
                                     max_batch_size=8, pack_length=pack_length)
    clf.logits(_random_texts(40, seed=3, max_words=50))
    shapes = clf.compiled_shapes
    assert len(shapes) == len(set(shapes)) >= 2
    assert set(shapes) <= set(clf.shapes())
    assert clf.engine.n_compilations == len(shapes)
    clf.logits(_random_texts(40, seed=3, max_words=50))  # the same batches compile nothing
    assert clf.compiled_shapes == shapes
    assert clf.engine.n_compilations == len(shapes)
    # new inputs compile only their own rungs, once (after a warm-up, nothing: the next test)
    clf.logits(_random_texts(40, seed=4, max_words=50))
    clf.logits(["one short text"])
    assert len(clf.compiled_shapes) == len(set(clf.compiled_shapes)) == clf.engine.n_compilations
    assert set(clf.compiled_shapes) <= set(clf.shapes())


@pytest.mark.parametrize("pack_length", [None, 24, 128])
def test_warmup_compiles_every_shape_and_nothing_after(tiny_flax, tmp_path, pack_length):
    clf = Classifier.from_pretrained(tiny_flax, cache_dir=tmp_path, max_batch_tokens=256,
                                     max_batch_size=8, pack_length=pack_length)
    clf.warmup()
    assert sorted(clf.compiled_shapes) == sorted(clf.shapes())
    clf.logits(_random_texts(30, seed=5, max_words=50))
    assert clf.engine.n_compilations == len(clf.shapes())


def test_packed_and_bucketed_agree(tiny_flax, tmp_path):
    texts = _random_texts(120, seed=8, max_words=50)
    packed = Classifier.from_pretrained(tiny_flax, cache_dir=tmp_path, pack_length=32)
    plain = Classifier.from_pretrained(tiny_flax, cache_dir=tmp_path, pack_length=None)
    np.testing.assert_allclose(packed.logits(texts), plain.logits(texts), atol=2e-6)
    assert packed.last_run.padding_efficiency > plain.last_run.padding_efficiency


def test_truncation_is_counted_and_can_be_refused(clf):
    long_text = "great " * 200
    out = clf.logits(["short", long_text, long_text])
    assert out.shape == (3, 2) and clf.last_run.n_truncated == 2
    assert clf.last_run.n_inputs == 3
    with pytest.raises(ValueError, match=r"text 1 is 202 tokens long, over max_length=64"):
        clf(["short", long_text], truncation=False)


def test_bad_inputs(clf):
    assert clf([]) == []
    assert clf.logits([]).shape == (0, 2)
    assert clf([""])[0]["label"] in clf.labels
    with pytest.raises(TypeError, match="text 2 is a int"):
        clf(["a", "b", 3])
    with pytest.raises(TypeError, match="text 0 is a bytes"):
        clf([b"bytes"])
    with pytest.raises(ValueError, match="top_k"):
        clf(["a"], top_k=0)
    with pytest.raises(ValueError, match="function_to_apply"):
        clf(["a"], function_to_apply="tanh")


def test_stream_is_lazy_and_ordered(clf):
    pulled = []

    def source():
        for i, text in enumerate(_random_texts(10_000, seed=6)):
            pulled.append(i)
            yield text

    stream = clf.stream(source(), top_k=None)
    first = next(stream)
    assert len(first) == 2
    assert len(pulled) <= clf.window + 1  # one window read, not the whole input
    rest = list(stream)
    assert len(rest) == 9_999


def test_options_are_validated(tiny_flax, tmp_path):
    with pytest.raises(FlaxsentError, match="max_length=1000"):
        Classifier.from_pretrained(tiny_flax, cache_dir=tmp_path, max_length=1000)
    with pytest.raises(FlaxsentError, match="dtype"):
        Classifier.from_pretrained(tiny_flax, cache_dir=tmp_path, dtype="float16")
    with pytest.raises(FlaxsentError, match="backend"):
        Classifier.from_pretrained(tiny_flax, cache_dir=tmp_path, backend="xmap")
    with pytest.raises(FlaxsentError, match="boundaries"):
        Classifier.from_pretrained(tiny_flax, cache_dir=tmp_path, boundaries=[32, 16])
    with pytest.raises(FlaxsentError, match="rungs must be an integer >= 1"):
        Classifier.from_pretrained(tiny_flax, cache_dir=tmp_path, rungs=0)


def test_rungs_one_keeps_every_batch_at_full_rows(tiny_flax, tmp_path):
    options = dict(cache_dir=tmp_path, max_batch_tokens=256, pack_length=32)
    full = Classifier.from_pretrained(tiny_flax, rungs=1, **options)
    laddered = Classifier.from_pretrained(tiny_flax, **options)  # 8x32 packed: rungs 1, 2, 4, 8
    assert full.shapes() == [s.as_tuple() for s in full.plan.shapes()]
    assert (4, 32, 4) in laddered.shapes() and (4, 32, 4) not in full.shapes()
    np.testing.assert_allclose(laddered.logits(TEXTS), full.logits(TEXTS), atol=1e-6)
    # TEXTS fill 3 or 4 packed rows: the rung of 4 rows, or all 8 without rungs
    assert full.compiled_shapes == [(8, 32, 4)] and laddered.compiled_shapes == [(4, 32, 4)]


def test_hf_folder_and_bfloat16(tiny_hf, tmp_path, clf):
    direct = Classifier.from_pretrained(tiny_hf, cache_dir=tmp_path)
    np.testing.assert_allclose(direct.logits(TEXTS), clf.logits(TEXTS), atol=1e-6)
    bf16 = Classifier.from_pretrained(tiny_hf, cache_dir=tmp_path, dtype="bfloat16")
    delta = np.abs(bf16.logits(TEXTS) - clf.logits(TEXTS)).max()
    assert 0 < delta < 0.1


def test_missing_tokenizer_is_a_clear_error(tiny_flax, tmp_path):
    import shutil
    folder = tmp_path / "model"
    shutil.copytree(tiny_flax, folder)
    (folder / "vocab.txt").unlink()
    with pytest.raises(FlaxsentError, match="no tokenizer"):
        Classifier.from_pretrained(folder, cache_dir=tmp_path / "cache")


def test_persistent_cache_makes_a_second_process_warm(tiny_flax, tmp_path):
    script = textwrap.dedent(f"""
        import time
        from flaxsent import Classifier
        clf = Classifier.from_pretrained({str(tiny_flax)!r}, cache_dir={str(tmp_path / 'c')!r},
                                         compilation_cache={{cache}})
        clf.warmup()
    """)
    for cache in ("True", "True"):
        subprocess.run([sys.executable, "-c", script.replace("{cache}", cache)], check=True,
                       timeout=300)
    entries = list((tmp_path / "c").iterdir())
    assert len(entries) >= 1
    before = {p.name for p in entries}
    subprocess.run([sys.executable, "-c", script.replace("{cache}", "True")], check=True,
                   timeout=300)
    assert {p.name for p in (tmp_path / "c").iterdir()} == before  # all hits, nothing new
    off = tmp_path / "off"
    subprocess.run([sys.executable, "-c", script.replace("{cache}", "False").replace(
        str(tmp_path / "c"), str(off))], check=True, timeout=300)
    assert not off.exists()


def test_none_inputs_hold_their_place(tiny_flax, tmp_path):
    """A None input yields None and keeps later inputs in the windows (and logits) they had."""
    clf = Classifier.from_pretrained(tiny_flax, cache_dir=tmp_path, max_batch_tokens=256,
                                     max_batch_size=8, window=4)
    texts = _random_texts(11, seed=3)
    full = clf.logits(texts)
    holes = list(texts)
    holes[1] = holes[6] = None
    got = list(clf.stream_logits(holes))
    assert len(got) == len(texts)
    assert got[1] is None and got[6] is None
    for i in (0, 2, 3, 4, 5, 7, 8, 9, 10):
        np.testing.assert_allclose(got[i], full[i], atol=1e-6)
    np.testing.assert_array_equal(np.stack(got[8:]), full[8:])  # a later window: bit for bit
    assert list(clf.stream_logits([None, None])) == [None, None]  # no text at all
    tail = list(clf.stream_logits(["fine", None]))
    assert tail[1] is None and tail[0].shape == (2,)


def test_batches_are_formed_per_window_of_inputs_bad_rows_included(tiny_flax, tmp_path,
                                                                    monkeypatch):
    """A bad (None) row counts in its window, so later texts keep the batches of one
    uninterrupted run and a merged or resumed run computes the same logits."""
    clf = Classifier.from_pretrained(tiny_flax, cache_dir=tmp_path, window=4)
    windows = []
    batch_window = type(clf.plan)._window_batches

    def spy(plan, indices, arrays, pad_id):
        windows.append(list(indices))
        return batch_window(plan, indices, arrays, pad_id)
    monkeypatch.setattr(type(clf.plan), "_window_batches", spy)  # a frozen dataclass
    texts = _random_texts(11, seed=4)
    holes = list(texts)
    holes[1] = holes[6] = None
    got = list(clf.stream_logits(holes))
    assert windows == [[0, 2, 3], [4, 5, 7], [8, 9, 10]]
    np.testing.assert_array_equal(np.stack(got[8:]), clf.logits(texts[8:]))  # as a fresh run


def test_a_vocabulary_past_the_embedding_is_refused_at_load(tiny_flax, tmp_path):
    """Ids past the embedding make Flax's lookup return NaN: refuse the pair, not the rows."""
    import shutil
    folder = tmp_path / "model"
    shutil.copytree(tiny_flax, folder)
    with open(folder / "vocab.txt", "a", encoding="utf-8") as f:
        f.write("xylophone\nzeppelin\n")  # ids 128 and 129; the embedding has 128 rows
    with pytest.raises(FlaxsentError, match=r"ids up to 129 .* 128 rows"):
        Classifier.from_pretrained(folder, cache_dir=tmp_path / "cache")


def test_a_non_finite_logit_is_an_error_naming_the_input(tiny_flax):
    clf = poisoned(tiny_flax, "awful")
    texts = ["good fun", "great film", "awful plot", "fine", "dull"]
    with pytest.raises(FlaxsentError, match=r"input 2: the model gave non-finite logits"):
        list(clf.stream_logits(texts))
    with pytest.raises(FlaxsentError, match="input 0"):
        clf(["awful"])
    assert len(clf(["good fun", "fine"])) == 2


def test_a_lost_batch_is_an_internal_error(clf, monkeypatch):
    """stream_logits checks that every input came back (a plan that drops a batch is a bug)."""
    from flaxsent.core.plan import ShapePlan
    batches = ShapePlan.batches
    monkeypatch.setattr(ShapePlan, "batches", lambda *a, **k: list(batches(*a, **k))[:-1])
    with pytest.raises(RuntimeError, match=r"internal error: 8 input\(s\) read but"):
        list(clf.stream_logits(TEXTS))


def test_the_non_finite_check_names_the_earliest_input_by_position():
    """The one check of every stream (Classifier per batch, serve's Batcher per request)."""
    rows = np.array([[0.5, 1.0], [np.nan, 0.0], [np.inf, 1.0]], np.float32)
    check_finite(rows[:1])
    with pytest.raises(NonFiniteLogitsError) as err:
        check_finite(rows, positions=np.array([5, 9, 2]))
    assert (err.value.index, err.value.others, err.value.logits) == (2, 1, [np.inf, 1.0])
    assert str(err.value).startswith("input 2: the model gave non-finite logits [inf, 1.0] (and "
                                     "for 1 other input(s) of its batch)")
    with pytest.raises(NonFiniteLogitsError) as err:
        check_finite(rows)  # positions default to the rows' own order
    assert err.value.index == 1


def test_the_length_limit_and_precision_rules(clf):
    assert clf.tokenizer.max_length == length_limit(clf.tokenizer, clf.config)
    assert clf.engine.precision == default_precision("float32") == "highest"
    assert default_precision("bfloat16") == default_precision(np.float16) == "default"
