"""flaxsent.integrations.beam on Beam's DirectRunner: every element back exactly once, equal to the
Classifier's result for it, bad elements as error records; keyed input; batch sizes from the
engine's plan; metrics in the handler's namespace; core flaxsent never imports Beam."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

beam = pytest.importorskip("apache_beam", reason="needs the beam extra")

from apache_beam.metrics.metric import MetricsFilter  # noqa: E402
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference  # noqa: E402

from flaxsent.core.classifier import Classifier  # noqa: E402
from flaxsent.errors import FlaxsentError  # noqa: E402
from flaxsent.integrations.beam import DEFAULT_WINDOW, METRICS_NAMESPACE, FlaxsentModelHandler  # noqa: E402
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


def test_batch_sizes_come_from_the_engines_plan(tiny_flax):
    options = {"max_length": 64, "pack_length": 32, "max_batch_tokens": 512, "window": 1000}
    plan = Classifier.from_pretrained(tiny_flax, **options).plan
    kwargs = FlaxsentModelHandler(str(tiny_flax), **options).batch_elements_kwargs()
    assert kwargs == {"min_batch_size": plan.pack.rows * plan.pack.slots,
                      "max_batch_size": 1000}


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
    assert FlaxsentModelHandler(str(tiny_flax), **given).batch_elements_kwargs() == sized


def test_handler_options(tiny_flax):
    handler = FlaxsentModelHandler(str(tiny_flax))
    assert handler.share_model_across_processes()
    assert not FlaxsentModelHandler(str(tiny_flax), share_model_across_processes=False,
                                    ).share_model_across_processes()
    assert handler.get_metrics_namespace() == METRICS_NAMESPACE
    handler.validate_inference_args(None)
    with pytest.raises(ValueError, match="takes no inference_args"):
        handler.validate_inference_args({"top_k": 2})


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
