"""The benchmark harness: end to end on the tiny config, parity failures caught, data-parallel
runs on 8 simulated devices, and --data read as predict reads it. No timing is asserted."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from flaxsent.bench import child as probe
from flaxsent.bench import parity, sysinfo
from flaxsent.bench.cli import add_bench_parser, main, run_bench
from flaxsent.bench.harness import (
    MODES,
    BenchOptions,
    _corpus,
    plan_strategies,
    run_harness,
)
from flaxsent.bench.timing import shape_groups

from flaxsent.core.plan import ShapePlan
from flaxsent.errors import FlaxsentError
from flaxsent.io import machine
from flaxsent.io.readers import read_records

pytest.importorskip("torch")  # the PyTorch side is the reference
pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory):
    """Where the tiny default model is built once for this module (never the user's cache)."""
    return tmp_path_factory.mktemp("bench-cache")


def _quiet(**kw) -> BenchOptions:
    return BenchOptions(quick=True, progress=False, print_table=False, **kw)


# ---- end to end -------------------------------------------------------------------------


def test_quick_end_to_end(tmp_path, model_cache, monkeypatch, capsys):
    monkeypatch.setenv("FLAXSENT_BENCH_CACHE", str(model_cache))
    out = tmp_path / "out"
    code = main(["--quick", "--only", "flax-bucketed", "--out", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0
    assert "| flax-bucketed | fp32 |" in stdout and "| flax-bucketed | bf16 |" in stdout
    assert "weights: **random**" in stdout
    threads = sysinfo.usable_cores()
    assert f"threads: PyTorch {threads}, XLA " in stdout
    assert "reference's own logits: mean |logit| " in stdout

    record = json.loads((out / "results.json").read_text())
    for key in ("platform", "cpu_model", "cpu_cores", "ram_gib", "device_kind",
                "device_count", "jax_backend"):
        assert record["machine"][key] not in (None, ""), key
    for key in ("python", "jax", "jaxlib", "flax", "torch", "transformers", "numpy",
                "flaxsent"):
        assert record["versions"][key], key
    assert record["model"]["weights"] == "random"
    assert record["corpus"]["n"] == 64 and record["corpus"]["length_stats"]["max"] > 0
    assert record["parity_ok"] is True
    assert record["settings"]["threads"] == threads == record["settings"]["torch_threads"]
    assert record["settings"]["xla_threads_set_by"] == f"PJRT_NPROC={threads}"
    assert set(record["git"]) == {"commit", "dirty"}
    assert 0 < record["reference_logit_scale"]["mean_abs"] \
        <= record["reference_logit_scale"]["max_abs"]

    rows = {r["key"]: r for r in record["strategies"]}
    assert set(rows) == {"torch-pipeline", "flax-bucketed", "flax-bucketed[bf16]"}
    assert {r["real_tokens"] for r in rows.values()} == {record["corpus"]["real_tokens"]}
    for key, r in rows.items():
        for field in ("sentences_per_s", "real_tokens_per_s", "median_s", "peak_rss_mb",
                      "first_result_cold_s"):
            assert r[field] > 0, (key, field)
        assert 0 < r["padding_efficiency"] <= 1
        assert r["repeats"] == 1 and r["probe_error"] is None
        assert r["parity_ok"] is True
        # fresh processes get exactly the bench's threads (XLA's pool is seen on Linux only)
        seen = threads if r["family"] == "torch" or sys.platform == "linux" else None
        assert r["probe"]["cold"]["threads"] == seen, key
    for key in ("flax-bucketed", "flax-bucketed[bf16]"):
        r = rows[key]
        assert r["compile_cold_s"] > 0 and r["compile_warm_s"] > 0
        assert r["first_result_warm_s"] > 0
        assert r["compiled_shapes"] and not r["compiled_during_timing"]
        groups = r["parity"]["per_shape"]
        assert groups and sum(g["n"] for g in groups) == 64
        assert {g["shape"].split()[1] for g in groups} <= set(r["plan"])
        assert r["parity"]["max_abs"] <= (1e-4 if r["dtype"] == "float32" else 0.1)

    png = (out / "chart.png").read_bytes()
    assert png.startswith(PNG_MAGIC)
    import matplotlib.image
    image = matplotlib.image.imread(out / "chart.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    md = (out / "results.md").read_text()
    assert "| strategy |" in md and "parity per shape" in md and "random" in md
    per_shape = rows["flax-bucketed"]["per_shape"]
    assert sum(g["n"] for g in per_shape) == 64 and all(g["sentences_per_s"] > 0
                                                        for g in per_shape)


def test_perturbed_flax_weights_fail_parity(tmp_path, model_cache):
    def bump(params):  # the flax side only: PyTorch keeps the original head
        params["classifier/bias"] = params["classifier/bias"] + 1e-3

    result = run_harness(_quiet(out=tmp_path, probes=False, model_cache=model_cache,
                                perturb=bump))
    assert result.exit_code == 1 and not result.parity_ok
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["parity_ok"] is False
    rows = {r["key"]: r for r in record["strategies"]}
    for key in ("flax-naive", "flax-bucketed", "flax-mesh-dp", "flax-pmap-dp"):
        assert rows[key]["parity_ok"] is False, key
        assert 5e-4 < rows[key]["parity"]["max_abs"] < 2e-3
    assert rows["torch-sorted"]["parity_ok"] is True
    assert rows["flax-bucketed[bf16]"]["parity_ok"] is True  # 1e-3 is inside bf16's tolerance
    assert "**FAIL**" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "chart.png").read_bytes().startswith(PNG_MAGIC)


def test_data_parallel_on_eight_devices_matches_one(tmp_path, model_cache):
    script = textwrap.dedent("""
        import json, sys
        import jax
        import numpy as np
        from flaxsent.bench.harness import BenchOptions, run_harness
        r = run_harness(BenchOptions(
            quick=True, out=sys.argv[1], model_cache=sys.argv[2], dtype="float32",
            only=["flax-bucketed", "flax-mesh-dp", "flax-pmap-dp"], probes=False,
            progress=False, print_table=False))
        one = r.logits["flax-bucketed"]
        print(json.dumps({
            "devices": jax.local_device_count(),
            "n_devices": {s["key"]: s["n_devices"] for s in r.record["strategies"]},
            "diff": {k: float(np.abs(r.logits[k] - one).max())
                     for k in ("flax-mesh-dp", "flax-pmap-dp")},
            "parity_ok": r.parity_ok, "threads": r.record["settings"]["threads"],
            "notes": r.record["notes"]}))
    """)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
           "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path), str(model_cache)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["devices"] == 8
    assert got["n_devices"]["flax-bucketed"] == 1
    assert got["n_devices"]["flax-mesh-dp"] == 8 and got["n_devices"]["flax-pmap-dp"] == 8
    assert got["diff"]["flax-mesh-dp"] <= 1e-6 and got["diff"]["flax-pmap-dp"] <= 1e-6
    assert got["parity_ok"] is True
    if got["threads"] < 8 and sys.platform == "linux":  # XLA keeps a pool thread per device
        assert any("flax-mesh-dp (timed): XLA's CPU pool ran 8 threads, not "
                   f"{got['threads']}" in n for n in got["notes"]), got["notes"]


# ---- options and command line -----------------------------------------------------------


def _keys(opts: BenchOptions, mode: str) -> list[str]:
    return [s.key for s in plan_strategies(opts, MODES[mode])]


def test_strategy_plans():
    default = _keys(BenchOptions(), "default")
    assert default[0] == "torch-pipeline"
    assert [k for k in default if k.endswith("[bf16]")] == ["flax-bucketed[bf16]"]
    assert "torch-compile" not in default
    full = _keys(BenchOptions(full=True), "full")
    assert "torch-compile" in full and len([k for k in full if k.endswith("[bf16]")]) == 4
    assert not any(k.endswith("[bf16]") for k in _keys(BenchOptions(dtype="float32"), "default"))
    bf16 = _keys(BenchOptions(dtype="bfloat16"), "default")
    assert not any(k.startswith("flax") and not k.endswith("[bf16]") for k in bf16)
    assert _keys(BenchOptions(only=["flax-naive"], dtype="float32"), "default") == \
        ["torch-pipeline", "flax-naive"]
    with pytest.raises(FlaxsentError, match="unknown strategy flax-fast"):
        plan_strategies(BenchOptions(only=["flax-fast"]), MODES["default"])


def test_bench_subcommand_parser():
    parser = argparse.ArgumentParser(prog="flaxsent")
    add_bench_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "--quick", "--dtype", "float32", "--devices", "2"])
    assert args.func is run_bench and args.quick and args.devices == 2 and args.probes
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "--quick", "--full"])


@pytest.mark.parametrize("argv, pattern", [
    (["--data", "no/such/file.txt"], r"'no/such/file\.txt' does not exist"),
    (["--only", "flax-fast"], "unknown strategy flax-fast"),
    (["--devices", "99"], r"--devices 99: this host has \d+ local device"),
    (["--repeats", "0"], "--repeats 0: must be a positive integer"),
])
def test_cli_errors_are_one_line(argv, pattern, tmp_path, model_cache, monkeypatch, capsys):
    import re
    monkeypatch.setenv("FLAXSENT_BENCH_CACHE", str(model_cache))
    code = main(["--quick", "--no-probes", "--out", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert re.search(pattern, err[-1]) and "Traceback" not in "\n".join(err)


def test_default_model_is_cached(model_cache):
    from flaxsent.embedded.default_model import MARKER, default_model_folder
    first = default_model_folder(quick=True, root=model_cache)
    stamp = (first / MARKER).stat().st_mtime_ns
    again = default_model_folder(quick=True, root=model_cache)
    assert again == first and (again / MARKER).stat().st_mtime_ns == stamp
    assert json.loads((first / MARKER).read_text())["weights"] == "random"
    assert {"config.json", "model.safetensors", "vocab.txt"} <= {p.name for p in first.iterdir()}


@pytest.mark.skipif(sys.platform != "linux", reason="XLA's pool threads are counted in /proc")
def test_xla_thread_pool_follows_the_setting_not_the_environment():
    code = ("from flaxsent.bench import sysinfo\n"
            "sysinfo.pin_xla_threads(3)\n"
            "import jax\n"
            "jax.devices()\n"
            "print(sysinfo.xla_cpu_threads())\n")
    env = {**os.environ, "PJRT_NPROC": "1", "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)  # one CPU device: the pool is exactly the setting
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-1] == "3"


def test_git_state_without_git(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on it
    assert machine.git_state() == {"commit": None, "dirty": None}


def test_git_state_in_a_checkout():
    """The suite runs from a checkout (CI: a clean clone), so its commit is known."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=os.path.dirname(sysinfo.__file__))
    assert head.returncode == 0, head.stderr
    state = machine.git_state()
    assert state["commit"] == head.stdout.strip() and state["dirty"] in (True, False)


def test_child_failure_is_reported_not_raised():
    out = probe.run_child(probe.cold_start, {})  # no strategy in the spec
    assert out["error"].startswith("exit 1") and "KeyError" in out["error"]


# ---- parity rules -----------------------------------------------------------------------


def test_parity_tolerances_and_shapes():
    ref = np.zeros((4, 2), np.float32)
    ref[:, 0] = 1.0
    plan = ShapePlan.build(512, max_batch_tokens=1024)
    groups, labels = shape_groups(plan, np.array([5, 120, 200, 400]))
    assert groups.tolist() == [0, 0, 1, 2]
    assert labels == ["packed 8x128x16 (1-128 tok)", "bucket 4x256x1 (129-256 tok)",
                      "bucket 2x512x1 (257-512 tok)"]
    assert parity.logit_scale(ref - 0.5) == {"mean_abs": 0.5, "max_abs": 0.5}
    assert parity.logit_scale(2 * ref) == {"mean_abs": 1.0, "max_abs": 2.0}
    near = ref + 5e-5
    assert parity.compare(ref, near, groups, labels, "float32")["parity_ok"]
    off = ref.copy()
    off[2, 1] += 2e-4
    got = parity.compare(ref, off, groups, labels, "float32")
    assert not got["parity_ok"] and got["max_abs"] == pytest.approx(2e-4, rel=1e-3)
    assert [g["shape"] for g in got["per_shape"]] == labels
    assert [g["n"] for g in got["per_shape"]] == [2, 1, 1]
    assert got["per_shape"][1]["max_abs"] == pytest.approx(2e-4, rel=1e-3)
    assert got["per_shape"][0]["max_abs"] == 0.0
    assert parity.compare(ref, off, groups, labels, "bfloat16")["parity_ok"]
    big = 30 * ref  # logits 30 and 0, mean |logit| 15: the bf16 limit scales to 0.1 x 15
    assert parity.compare(big, big + 1.2, groups, labels, "bfloat16")["limit"] == \
        pytest.approx(1.5)
    assert parity.compare(big, big + 1.2, groups, labels, "bfloat16")["parity_ok"]
    assert not parity.compare(ref, ref + 0.2, groups, labels, "bfloat16")["parity_ok"]
    assert not parity.compare(big, big + 1.8, groups, labels, "bfloat16")["parity_ok"]
    flipped = ref.copy()
    flipped[0] = [0.0, 0.05]  # max |Δ| 1.0 and one argmax flip of four
    assert not parity.compare(ref, flipped, groups, labels, "bfloat16")["parity_ok"]
    nan = ref.copy()
    nan[1, 0] = np.nan
    assert not parity.compare(ref, nan, groups, labels, "bfloat16")["parity_ok"]


# ---- --data ---------------------------------------------------------------------------


@pytest.mark.parametrize("name, content", [
    ("s.txt", "a fine film .\n\n  \nnot good , not bad\r\n"),
    ("dev.tsv", 'sentence\tlabel\nit \'s a "charming" journey .\t1\nunflinchingly bleak\t0\n'),
    ("reviews.csv", 'id,sentence,text\n1,"no, this","good, really good"\n2,no,meh\n'),
    ("x.jsonl", '{"text": "one", "label": 1}\n\n{"text": "two", "sentence": "no"}\n'),
])
def test_data_is_read_as_predict_reads_it(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with read_records(str(path)) as reader:
        want = [r.text for r in reader]
    texts, info = _corpus(BenchOptions(data=str(path)), MODES["default"])
    assert texts == want and info["n"] == len(want) and info["source"] == str(path)
    assert info["format"] == name.rsplit(".", 1)[1]
    assert texts[-1] in ("not good , not bad", "unflinchingly bleak", "meh", "two")
    quick, info = _corpus(BenchOptions(data=str(path), quick=True), MODES["quick"])
    assert quick == want[:64] and "--quick" in info["note"]


def test_data_parquet_and_first_sentences_when_quick(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"sentence": [f"s{i}" for i in range(100)]}), path)
    texts, info = _corpus(BenchOptions(data=str(path), quick=True), MODES["quick"])
    assert texts == [f"s{i}" for i in range(64)] and info["column"] == "sentence"


@pytest.mark.parametrize("name, content, pattern", [
    ("nope.txt", None, "does not exist"),
    ("empty.txt", "", "holds no sentences"),
    ("bad.tsv", "id\tlabel\n1\t0\n", r"no 'text' or 'sentence' column.*'id', 'label'"),
    ("short.tsv", "label\tsentence\n1\n", r"short\.tsv, line 2: the row has 1 field"),
    ("bad.jsonl", '{"text": "ok"}\n{"text": \n', r"bad\.jsonl, line 2: not valid JSON"),
    ("type.jsonl", '{"text": "ok"}\n{"text": 3}\n', r"type\.jsonl, line 2: 'text' is int"),
    ("latin1.txt", b"ok\ncaf\xe9\n", r"latin1\.txt, line 2: invalid UTF-8"),
])
def test_data_stops_at_the_first_bad_row_naming_its_line(tmp_path, name, content, pattern):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(FlaxsentError, match=pattern):
        _corpus(BenchOptions(data=str(path)), MODES["default"])


def test_train_bench_quick(tmp_path, model_cache):
    """--train: the four strategies on the same examples, with the padding each one computes."""
    from flaxsent.bench.train_bench import TrainBenchOptions, run_train_bench
    record = run_train_bench(TrainBenchOptions(out=str(tmp_path / "t"), steps=2, quick=True,
                                               progress=False, model_cache=str(model_cache)))
    rows = {r["name"]: r for r in record["strategies"]}
    assert list(rows) == ["flax-packed", "flax-padded", "torch-padded", "torch-grouped"]
    assert rows["flax-padded"]["padding_efficiency"] == \
        pytest.approx(rows["torch-padded"]["padding_efficiency"])  # both pad to 128
    assert rows["flax-packed"]["padding_efficiency"] > 0.5 > rows["flax-padded"][
        "padding_efficiency"]
    assert rows["torch-grouped"]["padding_efficiency"] > rows["torch-padded"][
        "padding_efficiency"]
    assert all(r["examples_per_s"] > 0 for r in rows.values())
    assert len(rows["flax-padded"]["compiled_shapes"]) == 1
    for name in ("train.json", "train.md", "train.png"):
        assert (tmp_path / "t" / name).stat().st_size > 0
