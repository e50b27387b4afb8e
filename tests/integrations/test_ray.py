"""flaxsent.ray on a local Ray cluster: Parquet in, Parquet out through map_batches, every row
back exactly once, equal to the Classifier's result for it, bad rows with an error; pandas and
numpy batches; predict's options (top_k, function_to_apply, logits); `import ray` is Ray
itself, and core flaxsent never imports it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="needs the ray extra")
pd = pytest.importorskip("pandas", reason="needs the ray extra (ray[data])")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from flaxsent.core.classifier import Classifier  # noqa: E402
from flaxsent.errors import FlaxsentError  # noqa: E402
from flaxsent.integrations.ray import FlaxsentPredictor  # noqa: E402
from tests.helpers import ROOT, WORDS  # noqa: E402

engines = pytest.mark.distributed_engines


def texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, rng.integers(1, 40))) for _ in range(n)]


@pytest.fixture(scope="module")
def clf(tiny_flax) -> Classifier:
    return Classifier.from_pretrained(tiny_flax)


@pytest.fixture(scope="module")
def cluster():
    """A fresh local cluster of 2 CPUs (address='local': never someone else's cluster)."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=256 * 2**20)
    yield
    ray.shutdown()


def check_rows(rows: pd.DataFrame, values: list, clf: Classifier, text_column: str) -> None:
    """Each id once; good rows equal the Classifier's result, bad ones carry an error."""
    assert sorted(rows["id"]) == list(range(len(values)))  # no row lost or duplicated
    good = [i for i, v in enumerate(values) if isinstance(v, str)]
    want = dict(zip(good, clf([values[i] for i in good]), strict=True))
    for row in rows.itertuples(index=False):
        row = row._asdict()
        if row["id"] in want:
            assert row[text_column] == values[row["id"]]
            assert row["label"] == want[row["id"]]["label"]
            assert row["score"] == pytest.approx(want[row["id"]]["score"], abs=1e-6)
            assert row["error"] == ""
        else:
            assert pd.isna(row["label"]) and pd.isna(row["score"])
            assert row["error"] == f"{text_column!r} is missing (null)"


@engines
def test_parquet_to_parquet_with_pandas_batches(cluster, clf, tiny_flax, tmp_path):
    values: list = texts(300)
    for i in (0, 77, 299):
        values[i] = None
    source = tmp_path / "in"
    source.mkdir()
    for part, start in enumerate(range(0, 300, 100)):  # a folder of 3 files, as jobs read
        pq.write_table(pa.table({
            "text": values[start:start + 100], "id": list(range(start, start + 100)),
            "label": ["gold"] * 100}), source / f"part-{part}.parquet")
    ds = ray.data.read_parquet(str(source))
    ds = ds.map_batches(FlaxsentPredictor, fn_constructor_kwargs={"model_path": str(tiny_flax)},
                        compute=ray.data.ActorPoolStrategy(size=1), batch_size=64,
                        batch_format="pandas")
    ds.write_parquet(str(tmp_path / "out"))

    rows = pq.read_table(tmp_path / "out").to_pandas()
    assert set(rows.columns) == {"text", "id", "input_label", "label", "score", "error"}
    assert (rows["input_label"] == "gold").all()  # an input column named label is kept
    check_rows(rows, values, clf, "text")


@engines
def test_numpy_batches_and_another_text_column(cluster, clf, tiny_flax):
    values: list = texts(120, seed=1)
    values[5] = None
    ds = ray.data.from_items([{"review": v, "id": i} for i, v in enumerate(values)])
    ds = ds.map_batches(FlaxsentPredictor,
                        fn_constructor_kwargs={"model_path": str(tiny_flax),
                                               "text_column": "review"},
                        compute=ray.data.ActorPoolStrategy(size=1), batch_size=50,
                        batch_format="numpy")
    check_rows(ds.to_pandas(), values, clf, "review")


@engines
def test_top_k_and_logits_to_parquet(cluster, clf, tiny_flax, tmp_path):
    values: list = texts(80, seed=2)
    values[9] = None
    ds = ray.data.from_items([{"text": v, "id": i, "labels": "gold"}
                              for i, v in enumerate(values)])
    ds = ds.map_batches(FlaxsentPredictor,
                        fn_constructor_kwargs={"model_path": str(tiny_flax), "top_k": None,
                                               "function_to_apply": "sigmoid", "logits": True},
                        compute=ray.data.ActorPoolStrategy(size=1), batch_size=32,
                        batch_format="pandas")
    ds.write_parquet(str(tmp_path / "out"))

    table = pq.read_table(tmp_path / "out")
    assert set(table.column_names) == {"text", "id", "input_labels", "labels", "logits", "error"}
    assert table.schema.field("logits").type == pa.list_(pa.float64())
    rows = sorted(table.to_pylist(), key=lambda r: r["id"])
    assert [r["id"] for r in rows] == list(range(len(values)))
    good = [v for v in values if v is not None]
    want = iter(zip(clf(good, top_k=None, function_to_apply="sigmoid"), clf.logits(good),
                    strict=True))
    for row in rows:
        if row["id"] == 9:
            assert row["labels"] is None and row["logits"] is None
            assert row["error"] == "'text' is missing (null)"
            continue
        labels, logits = next(want)
        assert [r["label"] for r in row["labels"]] == [r["label"] for r in labels]
        np.testing.assert_allclose([r["score"] for r in row["labels"]],
                                   [r["score"] for r in labels], atol=1e-6)
        np.testing.assert_allclose(row["logits"], logits, atol=1e-6)
        assert row["error"] == ""


@pytest.mark.parametrize("batch_format", ["pandas", "numpy"])
def test_top_k_and_logits_columns_in_either_batch_format(tiny_flax, clf, batch_format):
    predictor = FlaxsentPredictor(str(tiny_flax), top_k=2, logits=True)
    sample = ["great fun", None, "dull"]
    columns = {"text": sample, "logits": [1, 2, 3]}
    batch = (pd.DataFrame(columns) if batch_format == "pandas"
             else {k: np.array(v, dtype=object) for k, v in columns.items()})
    out = predictor(batch)
    assert list(out) == ["text", "input_logits", "labels", "logits", "error"]
    want, rows = clf(["great fun", "dull"], top_k=2), clf.logits(["great fun", "dull"])
    labels, logits = list(out["labels"]), list(out["logits"])
    assert labels[1] is None and logits[1] is None
    for got, expected in zip([labels[0], labels[2]], want, strict=True):
        assert [r["label"] for r in got] == [r["label"] for r in expected]
        assert [r["score"] for r in got] == pytest.approx([r["score"] for r in expected],
                                                          abs=1e-6)
    np.testing.assert_allclose([logits[0], logits[2]], rows, atol=1e-6)
    assert list(out["error"]) == ["", "'text' is missing (null)", ""]
    assert list(out["input_logits"]) == [1, 2, 3]


def test_bad_options_fail_when_the_actor_starts(tiny_flax):
    with pytest.raises(FlaxsentError, match="top_k must be a positive integer"):
        FlaxsentPredictor(str(tiny_flax), top_k=0)
    with pytest.raises(FlaxsentError, match="logits must be True or False"):
        FlaxsentPredictor(str(tiny_flax), logits="yes")


@pytest.fixture(scope="module")
def predictor(tiny_flax) -> FlaxsentPredictor:
    return FlaxsentPredictor(str(tiny_flax))


def test_a_batch_of_only_bad_rows_keeps_string_columns(predictor):
    out = predictor(pd.DataFrame({"text": pd.Series([None, 3], dtype=object), "id": [0, 1]}))
    schema = pa.Table.from_pandas(out).schema
    for name in ("label", "error"):
        assert schema.field(name).type in (pa.string(), pa.large_string())
    assert list(out["error"]) == ["'text' is missing (null)", "'text' is int, not a string"]
    assert out["score"].isna().all()


def test_numpy_batch_directly(predictor, clf):
    batch = {"text": np.array(["great fun", "dull"]), "id": np.array([7, 8])}
    out = predictor(batch)
    assert list(out) == ["text", "id", "label", "score", "error"]
    want = clf(["great fun", "dull"])
    assert list(out["label"]) == [w["label"] for w in want]
    np.testing.assert_allclose(out["score"], [w["score"] for w in want], atol=1e-6)
    assert list(out["error"]) == ["", ""]


@pytest.mark.parametrize("batch, pattern", [
    ({"sentence": np.array(["x"])}, "the batch has no 'text' column; its columns are "
                                    "'sentence': pass text_column="),
    (["x"], "takes pandas or numpy batches, got a list: pass batch_format='pandas'"),
    (pa.table({"text": ["x"]}), "takes pandas or numpy batches, got a Table"),
])
def test_bad_batches_are_one_line_errors(predictor, batch, pattern):
    with pytest.raises(FlaxsentError, match=pattern):
        predictor(batch)


def test_import_ray_is_ray_itself_and_core_flaxsent_never_imports_it():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    check = ("import sys, flaxsent, flaxsent.core.classifier, flaxsent.predict.run, flaxsent.cli, "
             "flaxsent.integrations.ray; assert 'ray' not in sys.modules\n"
             "import ray, ray.data; print(ray.__file__)")
    out = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).parent != ROOT / "flaxsent"
    assert Path(out.stdout.strip()).name == "__init__.py"
