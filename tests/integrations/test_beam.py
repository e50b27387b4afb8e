"""flaxsent.integrations.beam on Beam's DirectRunner: every element back exactly once, equal to the
Classifier's result for it, bad elements as error records; keyed input; batch sizes from the
engine's plan, token-weighted where Beam can; per-call options through inference_args; a model
refresh through a side input; metrics in the handler's namespace; core flaxsent never imports
Beam. (The declared Beam floor itself: test_beam_floor.py.)"""

from __future__ import annotations

import collections
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

beam = pytest.importorskip("apache_beam", reason="needs the beam extra")

from apache_beam.metrics import Metrics  # noqa: E402
from apache_beam.metrics.metric import MetricsFilter  # noqa: E402
from apache_beam.ml.inference.base import (  # noqa: E402
    KeyedModelHandler,
    ModelMetadata,
    RunInference,
)

from flaxsent.core.classifier import Classifier  # noqa: E402
from flaxsent.errors import FlaxsentError  # noqa: E402
from flaxsent.integrations import beam as flaxsent_beam  # noqa: E402
from flaxsent.integrations.beam import (  # noqa: E402
    CALL_BATCHES,
    DEFAULT_WINDOW,
    METRICS_NAMESPACE,
    WEIGHTED_BATCHING,
    FlaxsentModelHandler,
    TokenCount,
)
from tests.helpers import ROOT, WORDS, build_hf_checkpoint  # noqa: E402

engines = pytest.mark.distributed_engines


def texts(n: int, seed: int = 0) -> list[str]:
    """n distinct random texts, so an output can be matched to its input by its text."""
    rng = np.random.default_rng(seed)
    out: dict[str, None] = {}
    while len(out) < n:
        out[" ".join(rng.choice(WORDS, rng.integers(1, 40)))] = None
    return list(out)


@pytest.fixture(scope="module")
def clf(tiny_flax) -> Classifier:
    return Classifier.from_pretrained(tiny_flax)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def counters(result) -> dict[str, int]:
    found = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    return {c.key.metric.name: c.committed for c in found["counters"]}


def assert_same(record: dict, want, top_k) -> None:
    """A handler record against the Classifier's own result for the same text."""
    if top_k == 1:
        assert record["label"] == want["label"]
        assert record["score"] == pytest.approx(want["score"], abs=1e-6)
    else:
        assert [r["label"] for r in record["labels"]] == [r["label"] for r in want]
        np.testing.assert_allclose([r["score"] for r in record["labels"]],
                                   [r["score"] for r in want], atol=1e-6)


@engines
@pytest.mark.parametrize("options", [
    {"max_batch_size": 50},
    {"max_batch_size": 64, "top_k": None, "logits": True, "share_model_across_processes": False},
])
def test_keyed_pipeline_equals_the_classifier_row_by_row(tiny_flax, clf, tmp_path, options):
    good = texts(300)
    values: list = list(good)
    bad_at = {3: None, 120: b"\xff broken", 299: 42}
    for i, value in sorted(bad_at.items()):
        values.insert(i, value)
    handler = FlaxsentModelHandler(str(tiny_flax), **options)
    out = tmp_path / "out.jsonl"
    pipeline = beam.Pipeline(runner="DirectRunner")
    _ = (pipeline
         | beam.Create(list(enumerate(values)))
         | RunInference(KeyedModelHandler(handler))
         | beam.Map(lambda kv: json.dumps({"key": kv[0], **kv[1].inference}))
         | beam.io.WriteToText(str(out), shard_name_template=""))
    result = pipeline.run()
    result.wait_until_finish()

    records = read_jsonl(out)
    keys = [r["key"] for r in records]
    assert len(keys) == len(values) and set(keys) == set(range(len(values)))  # each exactly once
    top_k = options.get("top_k", 1)
    want = dict(zip((i for i in range(len(values)) if i not in bad_at),
                    clf(good, top_k=top_k), strict=True))
    logits = dict(zip(want, clf.logits(good), strict=True))
    for record in records:
        key = record["key"]
        if key in bad_at:
            assert record["error"].startswith("the element is ")
            assert all(record[f] is None for f in record if f not in ("key", "error"))
        else:
            assert "error" not in record
            assert_same(record, want[key], top_k)
            if options.get("logits"):
                np.testing.assert_allclose(record["logits"], logits[key], atol=1e-6)
    metrics = counters(result)
    assert metrics["num_inferences"] == len(values)
    assert metrics["num_error_records"] == len(bad_at)
    batches = result.metrics().query(MetricsFilter().with_name(
        "inference_batch_latency_micro_secs"))["distributions"]
    assert batches[0].committed.count >= len(values) / options["max_batch_size"]


@engines
def test_text_file_to_jsonl_as_in_the_readme(tiny_flax, clf, tmp_path):
    lines = texts(200, seed=1)
    raw = [line.encode() for line in lines] + [b"", b"caf\xe9 au lait", lines[0].encode()]
    source = tmp_path / "reviews.txt"
    source.write_bytes(b"\n".join(raw) + b"\n")
    out = tmp_path / "scores.jsonl"

    def to_json(result) -> str:
        text = result.example.decode("utf-8", errors="backslashreplace")
        return json.dumps({"text": text, **result.inference}, ensure_ascii=False)

    with beam.Pipeline(runner="DirectRunner") as pipeline:
        _ = (pipeline
             | beam.io.ReadFromText(str(source), coder=beam.coders.BytesCoder())
             | RunInference(FlaxsentModelHandler(str(tiny_flax)))
             | beam.Map(to_json)
             | beam.io.WriteToText(str(out), shard_name_template=""))

    records = read_jsonl(out)
    # no row lost or duplicated: the texts that came back are the texts that went in
    assert collections.Counter(r["text"] for r in records) == collections.Counter(
        line.decode("utf-8", errors="backslashreplace") for line in raw)
    good = lines + [""]
    want = dict(zip(good, clf(good), strict=True))
    for record in records:
        if record["text"] == "caf\\xe9 au lait":
            assert record["label"] is None and record["score"] is None
            assert record["error"].startswith("the element is not valid UTF-8 (byte 4")
        else:
            assert set(record) == {"text", "label", "score"}
            assert_same(record, want[record["text"]], 1)


class WeighingHandler(FlaxsentModelHandler):
    """The handler, also recording each batch's tokens (as TokenCount weighs them)."""

    def run_inference(self, batch, model, inference_args=None):
        weigh = self.batch_elements_kwargs()["element_size_fn"]
        Metrics.distribution("test", "batch_tokens").update(sum(map(weigh, batch)))
        return super().run_inference(batch, model, inference_args)


@engines
@pytest.mark.skipif(not WEIGHTED_BATCHING, reason="this Beam's BatchElements has no weights")
def test_a_pipelines_batches_stay_within_their_token_weight(tiny_flax, clf, tmp_path):
    good = texts(200, seed=6)
    handler = WeighingHandler(str(tiny_flax), max_batch_weight=300)
    out = tmp_path / "out.jsonl"
    pipeline = beam.Pipeline(runner="DirectRunner")
    _ = (pipeline | beam.Create(good) | RunInference(handler)
         | beam.Map(lambda r: json.dumps({"text": r.example, **r.inference}))
         | beam.io.WriteToText(str(out), shard_name_template=""))
    result = pipeline.run()
    result.wait_until_finish()
    weights = result.metrics().query(MetricsFilter().with_name("batch_tokens"))["distributions"]
    tokens = weights[0].committed
    total = sum(len(ids) for ids in clf.tokenizer.encode_batch(good)[0])
    assert tokens.sum == total and tokens.max <= 300  # no text alone weighs over 300
    assert tokens.count >= total / 300
    want = dict(zip(good, clf(good), strict=True))
    records = read_jsonl(out)
    assert sorted(r["text"] for r in records) == sorted(good)
    for record in records:
        assert_same(record, want[record["text"]], 1)


@engines
def test_inference_args_and_a_model_refresh_through_a_side_input(tiny_flax, tmp_path):
    other = tmp_path / "other"
    build_hf_checkpoint(other, seed=7)
    good = texts(60, seed=8)
    out = tmp_path / "out.jsonl"
    pipeline = beam.Pipeline(runner="DirectRunner")
    refresh = pipeline | "model" >> beam.Create([ModelMetadata(model_id=str(other),
                                                               model_name="other")])
    _ = (pipeline | beam.Create(good)
         | RunInference(FlaxsentModelHandler(str(tiny_flax)), model_metadata_pcoll=refresh,
                        inference_args={"top_k": None, "logits": True})
         | beam.Map(lambda r: json.dumps({"text": r.example, "model": r.model_id,
                                          **r.inference}))
         | beam.io.WriteToText(str(out), shard_name_template=""))
    pipeline.run().wait_until_finish()

    new = Classifier.from_pretrained(other)
    want = dict(zip(good, new(good, top_k=None), strict=True))
    logits = dict(zip(good, new.logits(good), strict=True))
    records = read_jsonl(out)
    assert sorted(r["text"] for r in records) == sorted(good)
    for record in records:
        assert record["model"] == str(other)
        assert_same(record, want[record["text"]], None)
        np.testing.assert_allclose(record["logits"], logits[record["text"]], atol=1e-6)


def counts(kwargs) -> dict:
    """The element-count bounds of batch_elements_kwargs (weights aside)."""
    return {k: v for k, v in kwargs.items() if k not in ("max_batch_weight", "element_size_fn")}


def test_batch_sizes_come_from_the_engines_plan(tiny_flax):
    options = {"max_length": 64, "pack_length": 32, "max_batch_tokens": 512, "window": 1000}
    plan = Classifier.from_pretrained(tiny_flax, **options).plan
    kwargs = FlaxsentModelHandler(str(tiny_flax), **options).batch_elements_kwargs()
    assert counts(kwargs) == {"min_batch_size": plan.pack.rows * plan.pack.slots,
                              "max_batch_size": 1000}


@pytest.mark.skipif(not WEIGHTED_BATCHING, reason="this Beam's BatchElements has no weights")
def test_batches_are_bounded_by_the_engines_tokens_where_beam_can(tiny_flax):
    kwargs = FlaxsentModelHandler(str(tiny_flax), max_batch_tokens=512).batch_elements_kwargs()
    assert kwargs["max_batch_weight"] == CALL_BATCHES * 512
    assert isinstance(kwargs["element_size_fn"], TokenCount)
    mine = FlaxsentModelHandler(str(tiny_flax), max_batch_weight=300, element_size_fn=len)
    assert {k: mine.batch_elements_kwargs()[k] for k in ("max_batch_weight", "element_size_fn")
            } == {"max_batch_weight": 300, "element_size_fn": len}


def test_without_weighted_batching_the_handler_sizes_by_count_and_refuses_weights(
        tiny_flax, monkeypatch):
    monkeypatch.setattr(flaxsent_beam, "WEIGHTED_BATCHING", False)
    kwargs = FlaxsentModelHandler(str(tiny_flax)).batch_elements_kwargs()
    assert set(kwargs) == {"min_batch_size", "max_batch_size"}
    for given in ({"max_batch_weight": 100}, {"element_size_fn": len}):
        with pytest.raises(ValueError, match="need a Beam whose BatchElements takes "
                                             "max_batch_weight"):
            FlaxsentModelHandler(str(tiny_flax), **given)


def test_token_count_is_the_engines_token_count(tiny_flax, clf):
    count = TokenCount(str(tiny_flax))
    sample = texts(30, seed=3) + [" ".join(["great"] * 300)]  # the last one is truncated
    ids, _ = clf.tokenizer.encode_batch(sample)
    assert [count(t) for t in sample] == [len(i) for i in ids]
    assert count(sample[-1]) == clf.tokenizer.max_length
    assert count(("key", sample[0])) == len(ids[0])  # a keyed pair, as older Beam hands it
    assert count(sample[0].encode()) == len(ids[0])
    assert [count(v) for v in (None, 42, b"\xff")] == [1, 1, 1]
    assert TokenCount(str(tiny_flax), max_length=8)(sample[-1]) == 8
    clone = pickle.loads(pickle.dumps(count))  # shipped to workers without its tokenizer
    assert clone._tokenizer is None and clone(sample[0]) == len(ids[0])


def test_batch_sizes_follow_the_workers_platform(tmp_path):
    folder = tmp_path / "tiny512"  # DistilBERT's 512-token limit, which sizing assumes
    build_hf_checkpoint(folder, max_position_embeddings=512)
    cpu = FlaxsentModelHandler(str(folder)).batch_elements_kwargs()
    local = Classifier.from_pretrained(folder).plan  # this host's platform: CPU
    assert cpu["min_batch_size"] == local.pack.rows * local.pack.slots
    assert cpu["max_batch_size"] == DEFAULT_WINDOW
    gpu = FlaxsentModelHandler(str(folder), platform="gpu").batch_elements_kwargs()
    assert gpu["min_batch_size"] > cpu["min_batch_size"]


def test_the_window_default_is_the_classifiers():
    import inspect
    assert inspect.signature(Classifier).parameters["window"].default == DEFAULT_WINDOW


@pytest.mark.parametrize("given, sized", [
    ({"max_batch_size": 10}, {"min_batch_size": 10, "max_batch_size": 10}),
    ({"min_batch_size": 9000}, {"min_batch_size": 9000, "max_batch_size": 9000}),
    ({"min_batch_size": 1, "max_batch_duration_secs": 5},
     {"min_batch_size": 1, "max_batch_size": DEFAULT_WINDOW, "max_batch_duration_secs": 5}),
])
def test_batch_sizes_given_to_the_handler_win(tiny_flax, given, sized):
    assert counts(FlaxsentModelHandler(str(tiny_flax), **given).batch_elements_kwargs()) == sized


def test_sharing_and_copies_answer_through_beams_public_methods(tiny_flax):
    handler = FlaxsentModelHandler(str(tiny_flax))
    assert handler.share_model_across_processes() and handler.model_copies() == 1
    alone = FlaxsentModelHandler(str(tiny_flax), share_model_across_processes=False)
    assert not alone.share_model_across_processes()
    copies = FlaxsentModelHandler(str(tiny_flax), share_model_across_processes=False,
                                  model_copies=2)
    assert copies.share_model_across_processes() and copies.model_copies() == 2  # as Beam's
    assert handler.get_metrics_namespace() == METRICS_NAMESPACE


def test_env_vars_are_set_before_the_model_loads(tiny_flax, monkeypatch):
    monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE", raising=False)
    handler = FlaxsentModelHandler(str(tiny_flax),
                                   env_vars={"XLA_PYTHON_CLIENT_PREALLOCATE": "false"})
    handler.set_environment_vars()
    assert os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"


def test_inference_args_are_predicts_per_call_options(tiny_flax, clf):
    handler = FlaxsentModelHandler(str(tiny_flax))
    handler.validate_inference_args(None)
    handler.validate_inference_args({"top_k": 2, "function_to_apply": "sigmoid", "logits": True})
    with pytest.raises(ValueError, match="inference_args are top_k, function_to_apply, logits; "
                                         "got temperature"):
        handler.validate_inference_args({"top_k": 2, "temperature": 0.5})
    model = handler.load_model()
    batch = texts(12, seed=4) + [None]
    results = list(handler.run_inference(batch, model, {"top_k": None, "logits": True,
                                                        "function_to_apply": "sigmoid"}))
    want = clf(batch[:-1], top_k=None, function_to_apply="sigmoid")
    for result, labels, row in zip(results, want, clf.logits(batch[:-1]), strict=False):
        assert_same(result.inference, labels, None)
        np.testing.assert_allclose(result.inference["logits"], row, atol=1e-6)
    assert results[-1].inference == {"labels": None, "logits": None,
                                     "error": "the element is missing (null)"}
    # the handler's own options again on the next call without arguments
    assert set(next(iter(handler.run_inference(batch[:1], model))).inference) == {"label",
                                                                                   "score"}
    with pytest.raises(FlaxsentError, match="top_k must be a positive integer"):
        handler.run_inference(batch, model, {"top_k": 0})


def test_update_model_path_scores_with_the_new_model(tiny_flax, tmp_path):
    other = tmp_path / "other"
    build_hf_checkpoint(other, seed=7)
    handler = FlaxsentModelHandler(str(tiny_flax))
    sample = texts(20, seed=5)
    handler.update_model_path(str(other))
    results = list(handler.run_inference(sample, handler.load_model()))
    want = Classifier.from_pretrained(other).logits(sample)
    got = handler.run_inference(sample, FlaxsentModelHandler(str(tiny_flax), logits=True)
                                .load_model())
    assert not np.allclose([r.inference["logits"] for r in got], want)  # the models differ
    assert [r.model_id for r in results] == [str(other)] * len(sample)
    np.testing.assert_allclose([r.inference["score"] for r in results],
                               [w["score"] for w in Classifier.from_pretrained(other)(sample)],
                               atol=1e-6)
    handler.update_model_path(None)  # None keeps the current model
    assert next(iter(handler.run_inference(sample[:1], handler.load_model()))).model_id == \
        str(other)


def test_a_bad_option_fails_when_the_model_loads(tiny_flax):
    with pytest.raises(FlaxsentError, match="top_k"):
        FlaxsentModelHandler(str(tiny_flax), top_k=-1).load_model()


def test_core_flaxsent_never_imports_beam_and_says_how_to_get_it():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    check = ("import sys, flaxsent, flaxsent.core.classifier, flaxsent.predict.run, flaxsent.cli, "
             "flaxsent.integrations.scoring; assert 'apache_beam' not in sys.modules; "
             "sys.modules['apache_beam'] = None\n"
             "try:\n    import flaxsent.integrations.beam\nexcept ImportError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "flaxsent.beam needs Apache Beam: pip install 'flaxsent[beam]'"
