"""The onnxruntime runtime: an exported folder through the same shape plan gives the JAX
classifier's logits, order, shapes and errors; a foreign standard-only graph runs bucketed."""

import shutil
import sys

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("jax2onnx")

from flaxsent import Classifier  # noqa: E402 - after the extra's import check
from flaxsent.core import checkpoint as ckpt  # noqa: E402
from flaxsent.core.onnx_engine import OnnxEngine, usable_cores  # noqa: E402
from flaxsent.core.tokenizer import TextTokenizer, copy_tokenizer_files  # noqa: E402
from flaxsent.errors import CheckpointError, FlaxsentError, NonFiniteLogitsError  # noqa: E402
from tests.helpers import WORDS  # noqa: E402

# a small budget: several batches of every shape; pack_length 16 packs short texts and leaves
# buckets of 32 and 64 tokens for the rest
OPTIONS = {"max_batch_tokens": 256, "max_batch_size": 8}


def random_texts(n, seed=0, max_words=50):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, rng.integers(0, max_words))) for _ in range(n)]


@pytest.fixture(scope="module")
def onnx_folder(tiny_flax, tmp_path_factory):
    from flaxsent.convert.onnx_export import export_onnx
    dst = tmp_path_factory.mktemp("onnx") / "model"
    export_onnx(tiny_flax, dst, quantize="int8")
    return dst


@pytest.fixture(scope="module")
def standard_only(onnx_folder, tmp_path_factory):
    """A folder as another exporter leaves it: model.onnx (HF's interface) alone."""
    dst = tmp_path_factory.mktemp("standard_only") / "model"
    shutil.copytree(onnx_folder, dst)
    for name in ("model_packed.onnx", "model_packed_quantized.onnx"):
        (dst / name).unlink()
    return dst


def both(jax_folder, onnx_folder, cache, **options):
    jax_clf = Classifier.from_pretrained(jax_folder, cache_dir=cache, **OPTIONS, **options)
    ort_clf = Classifier.from_pretrained(onnx_folder, runtime="onnxruntime", **OPTIONS,
                                         **options)
    return jax_clf, ort_clf


@pytest.mark.parametrize("pack_length", [16, None], ids=["packed", "bucketed"])
def test_the_runtime_gives_the_jax_classifiers_logits_in_the_same_shapes(
        tiny_flax, onnx_folder, tmp_path, pack_length):
    jax_clf, ort_clf = both(tiny_flax, onnx_folder, tmp_path, pack_length=pack_length)
    assert ort_clf.shapes() == jax_clf.shapes()
    assert (ort_clf.plan.pack is None) == (pack_length is None)
    texts = random_texts(70, seed=1)
    ours, theirs = ort_clf.logits(texts), jax_clf.logits(texts)
    assert ours.dtype == np.float32 and ours.shape == (70, 2)
    assert np.abs(ours - theirs).max() <= 1e-5
    # the same batches, in the same order: every kind of shape used, each recorded once
    assert ort_clf.compiled_shapes == jax_clf.compiled_shapes
    assert set(ort_clf.compiled_shapes) <= set(ort_clf.shapes())
    assert {s.as_tuple()[1:] for s in ort_clf.plan.shapes()} == {
        s[1:] for s in ort_clf.compiled_shapes}  # these texts use every kind
    assert ort_clf.last_run.n_batches == jax_clf.last_run.n_batches
    for a, b in zip(ort_clf(texts, top_k=None), jax_clf(texts, top_k=None), strict=True):
        assert [x["label"] for x in a] == [x["label"] for x in b]
        assert [x["score"] for x in a] == pytest.approx([x["score"] for x in b], abs=1e-5)


def test_a_standard_only_graph_runs_bucketed_one_text_a_row(tiny_flax, standard_only, tmp_path):
    jax_clf = Classifier.from_pretrained(tiny_flax, cache_dir=tmp_path, **OPTIONS)
    ort_clf = Classifier.from_pretrained(standard_only, runtime="onnxruntime", **OPTIONS)
    assert ort_clf.plan.pack is None and not ort_clf.engine.packs
    assert all(slots == 1 for _, _, slots in ort_clf.shapes())
    texts = random_texts(40, seed=2)
    assert np.abs(ort_clf.logits(texts) - jax_clf.logits(texts)).max() <= 1e-5
    assert {shape[2] for shape in ort_clf.compiled_shapes} == {1}


def test_graphs_in_an_onnx_subfolder_load_as_optimum_lays_them_out(standard_only, tmp_path):
    dst = tmp_path / "optimum"
    shutil.copytree(standard_only, dst)
    (dst / "onnx").mkdir()
    for name in ("model.onnx", "model_quantized.onnx"):
        (dst / name).rename(dst / "onnx" / name)
    assert not list(dst.glob("*.onnx"))
    texts = random_texts(20, seed=4)
    for quantize in ("none", "int8"):
        top = Classifier.from_pretrained(standard_only, runtime="onnxruntime",
                                         quantize=quantize, **OPTIONS)
        sub = Classifier.from_pretrained(dst, runtime="onnxruntime", quantize=quantize,
                                         **OPTIONS)
        assert np.array_equal(sub.logits(texts), top.logits(texts))


def test_a_hub_id_fetches_the_onnx_graphs_too(standard_only, tmp_path, monkeypatch):
    import huggingface_hub
    asked = []

    def snapshot_download(repo_id, allow_patterns):
        asked.extend(allow_patterns)
        return str(standard_only)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    clf = Classifier.from_pretrained("someone/sst2-onnx", runtime="onnxruntime", **OPTIONS)
    assert clf.source == standard_only
    assert {"*.onnx", "onnx/*.onnx", "config.json", "vocab.txt"} <= set(asked)


def test_warmup_runs_every_shape_once_and_new_inputs_add_none(onnx_folder):
    clf = Classifier.from_pretrained(onnx_folder, runtime="onnxruntime", pack_length=16,
                                     **OPTIONS)
    assert clf.compiled_shapes == []
    clf.warmup()
    assert clf.compiled_shapes == clf.shapes()
    clf.logits(random_texts(30, seed=3))
    assert clf.compiled_shapes == clf.shapes()


def test_order_and_none_placeholders_match_the_jax_stream(tiny_flax, onnx_folder, tmp_path):
    jax_clf, ort_clf = both(tiny_flax, onnx_folder, tmp_path, window=7, pack_length=16)
    texts = random_texts(23, seed=4)
    texts[3] = texts[11] = None
    ours = list(ort_clf.stream_logits(texts))
    theirs = list(jax_clf.stream_logits(texts))
    assert [r is None for r in ours] == [r is None for r in theirs] == [t is None for t in texts]
    assert max(np.abs(a - b).max() for a, b in zip(ours, theirs, strict=True)
               if a is not None) <= 1e-5


def test_non_finite_logits_raise_the_same_error_naming_the_input(tiny_flax, tmp_path):
    from flaxsent.convert.onnx_export import export_onnx
    model = ckpt.load_model(tiny_flax)
    tokenizer = TextTokenizer.from_folder(tiny_flax)
    table = model.embeddings.word_embeddings.embedding
    table[...] = table[...].at[tokenizer.encode_batch(["awful"])[0][0][1]].set(np.nan)
    broken = tmp_path / "broken"
    broken.mkdir()
    ckpt.save_flax_checkpoint(broken, model.config, ckpt.params_of(model))
    copy_tokenizer_files(tiny_flax, broken)
    export_onnx(broken, tmp_path / "onnx")
    texts = ["good fun", "great film", "awful plot", "fine", "dull"]
    errors = []
    for clf in (Classifier(model, tokenizer, window=4, pack_length=None),
                Classifier.from_pretrained(tmp_path / "onnx", runtime="onnxruntime",
                                           window=4, pack_length=None)):
        with pytest.raises(NonFiniteLogitsError) as err:
            list(clf.stream_logits(texts))
        errors.append(str(err.value))
        assert len(clf(["good fun", "fine"])) == 2
    assert errors[0] == errors[1]
    assert errors[0].startswith("input 2: the model gave non-finite logits")


def test_int8_picks_the_quantized_graphs_and_agrees(onnx_folder, tmp_path):
    fp32 = Classifier.from_pretrained(onnx_folder, runtime="onnxruntime", **OPTIONS)
    int8 = Classifier.from_pretrained(onnx_folder, runtime="onnxruntime", quantize="int8",
                                      **OPTIONS)
    assert int8.engine.files == ["model_quantized.onnx", "model_packed_quantized.onnx"]
    assert (int8.engine.quantize, fp32.engine.quantize) == ("int8", "none")
    texts = random_texts(60, seed=5)
    a, b = int8.logits(texts), fp32.logits(texts)
    assert np.abs(a - b).max() <= 0.1
    assert (a.argmax(-1) == b.argmax(-1)).mean() >= 0.9


def test_serves_through_the_batcher(onnx_folder):
    from flaxsent.serve.batcher import Batcher
    clf = Classifier.from_pretrained(onnx_folder, runtime="onnxruntime", pack_length=16,
                                     **OPTIONS)
    batcher = Batcher(clf, max_wait_s=0.0)
    batcher.start()
    try:
        assert batcher.wait_ready(120)
        texts = random_texts(12, seed=6)
        ids, _ = clf.tokenizer.encode_batch(texts)
        got = batcher.submit(ids).result(60).logits
    finally:
        batcher.close(60)
    assert np.abs(got - clf.logits(texts)).max() <= 1e-6


def test_threads_default_to_the_usable_cores(onnx_folder):
    assert OnnxEngine.from_folder(onnx_folder).threads == usable_cores()
    assert OnnxEngine.from_folder(onnx_folder, threads=1).threads == 1
    engine = OnnxEngine.from_folder(onnx_folder)
    assert (engine.n_devices, engine.devices[0].platform) == (1, "cpu")


def test_bad_input_is_one_clear_error(tiny_flax, onnx_folder, standard_only, tmp_path,
                                      monkeypatch):
    def refused(folder, match, **options):
        with pytest.raises(FlaxsentError, match=match) as err:
            Classifier.from_pretrained(folder, **options)
        assert "\n" not in str(err.value)

    refused(tiny_flax, r"no model\.onnx .*flaxsent export SRC DST --format onnx",
            runtime="onnxruntime")
    refused(onnx_folder, r"runtime 'tensorrt': choose one of jax, onnxruntime",
            runtime="tensorrt")
    refused(onnx_folder, "dtype bfloat16", runtime="onnxruntime", dtype="bfloat16")
    refused(onnx_folder, "devices: an option of the jax runtime", runtime="onnxruntime",
            devices=1)
    refused(onnx_folder, r"quantize='int4'", runtime="onnxruntime", quantize="int4")
    refused(onnx_folder, "threads=0", runtime="onnxruntime", threads=0)
    bare = tmp_path / "bare"
    shutil.copytree(standard_only, bare)
    (bare / "model_quantized.onnx").unlink()
    refused(bare, r"no model_quantized\.onnx .*--quantize int8", runtime="onnxruntime",
            quantize="int8")
    shutil.copy(onnx_folder / "model_packed.onnx", bare / "model.onnx")  # the wrong interface
    with pytest.raises(CheckpointError, match=r"model\.onnx: inputs \['cls_index'"):
        Classifier.from_pretrained(bare, runtime="onnxruntime")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    refused(onnx_folder, r"pip install 'flaxsent\[onnx\]'", runtime="onnxruntime")
