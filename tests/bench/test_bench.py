"""The benchmark harness: end to end on the tiny config, parity failures caught, data-parallel
runs on 8 simulated devices, --data read as predict reads it, the peers users would pick
(ONNX Runtime fp32 and int8, PyTorch bf16 autocast, flaxsent int8 and its ONNX Runtime
runtime) and model FLOPs / MFU. No timing is asserted."""

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
from flaxsent.bench import flops, parity, peers, report, sysinfo
from flaxsent.bench.cli import add_bench_parser, main, run_bench
from flaxsent.bench.harness import (
    ACCELERATOR_SCALE,
    MODES,
    BenchOptions,
    _corpus,
    corpus_size,
    plan_strategies,
    run_harness,
    skipped_notes,
)
from flaxsent.bench.strategies import Strategy
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
    int8 = ("flax-bucketed[int8]",)
    assert set(rows) == {"torch-pipeline", "flax-bucketed", "flax-bucketed[bf16]", *int8}
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
    for key in ("flax-bucketed", "flax-bucketed[bf16]", *int8):
        r = rows[key]
        assert r["compile_cold_s"] > 0 and r["compile_warm_s"] > 0
        assert r["first_result_warm_s"] > 0
        assert r["compiled_shapes"] and not r["compiled_during_timing"]
        groups = r["parity"]["per_shape"]
        assert groups and sum(g["n"] for g in groups) == 64
        # every row's parity is grouped by the default (fp32) plan's shapes; int8 on a CPU
        # packs shorter rows of its own
        assert {g["shape"].split()[1] for g in groups} <= set(rows["flax-bucketed"]["plan"])
        assert r["parity"]["max_abs"] <= (1e-4 if r["key"] == "flax-bucketed" else 0.3)
    for key in int8:  # JAX int8: judged by argmax agreement, reported beside |Δ|
        assert rows[key]["parity"]["tolerance_class"] == "int8"
        assert rows[key]["parity"]["min_argmax"] == parity.INT8_MIN_ARGMAX
        assert "| flax-bucketed | int8 |" in stdout
    # model FLOPs are credited per real token; a CPU has no published peak: no MFU
    f = record["model_flops"]
    assert f["encoder_matmul_params"] == flops.matmul_params(record["model"]["config"])
    assert f["per_pass"] > 2 * f["encoder_matmul_params"] * record["corpus"]["real_tokens"]
    assert all(r["model_tflops_per_s"] > 0 and r["mfu"] is None for r in rows.values())

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

    # every flaxsent row and PyTorch's own; ONNX Runtime's peer runs end to end further down
    only = ["torch-sorted", "flax-naive", "flax-bucketed", "flax-mesh-dp", "flax-pmap-dp",
            "flax-ort"]
    result = run_harness(_quiet(out=tmp_path, probes=False, model_cache=model_cache,
                                perturb=bump, only=only))
    assert result.exit_code == 1 and not result.parity_ok
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["parity_ok"] is False
    rows = {r["key"]: r for r in record["strategies"]}
    for key in ("flax-naive", "flax-bucketed", "flax-mesh-dp", "flax-pmap-dp"):
        assert rows[key]["parity_ok"] is False, key
        assert 5e-4 < rows[key]["parity"]["max_abs"] < 2e-3
    assert rows["torch-sorted"]["parity_ok"] is True
    assert rows["flax-bucketed[bf16]"]["parity_ok"] is True  # 1e-3 is inside bf16's tolerance
    # the run brings the peers this host runs
    autocast = peers.torch_autocast_dtypes("cpu", peers.cpu_flags())
    assert ("torch-sorted[bf16]" in rows) == ("bfloat16" in autocast)
    if "torch-sorted[bf16]" in rows:
        assert rows["torch-sorted[bf16]"]["parity_ok"] is True  # PyTorch: not perturbed
    if "flax-bucketed[int8]" in rows:  # 1e-3 is inside int8's tolerance too
        assert rows["flax-bucketed[int8]"]["parity_ok"] is True
    if "flax-ort" in rows:  # exported from the perturbed folder: must fail like the others
        assert rows["flax-ort"]["parity_ok"] is False
    assert "PARITY FAILURE: " in result.markdown and "flax-bucketed" in result.markdown
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
    (["--sentences", "0"], "--sentences 0: must be a positive integer"),
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


def test_int8_agreement_fails_real_weights_and_is_only_reported_on_random_ones():
    ref = np.zeros((4, 2), np.float32)
    ref[:, 0] = 1.0
    groups, labels = np.zeros(4, int), ["all"]
    flipped = ref.copy()
    flipped[0] = [0.9, 1.0]  # one argmax flip of four, max |Δ| 1.0 > 0.25 x max(1, 0.5)
    real = parity.compare(ref, flipped, groups, labels, "int8")
    assert not real["parity_ok"] and not real["agreement_ok"] and real["agreement_judged"]
    big = 10 * ref  # mean |logit| 5: the int8 bound is 1.25
    near_flip = big.copy()
    near_flip[0] = [5.0, 5.5]  # flips, |Δ| 5.5: past the bound, a broken path on any weights
    assert not parity.compare(big, near_flip, groups, labels, "int8",
                              random_weights=True)["parity_ok"]
    close = 10 * np.array([[1.0, 0.99], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], np.float32)
    close_flip = close.copy()
    close_flip[0] = [9.9, 10.0]  # a near tie flips; |Δ| 0.1
    random = parity.compare(close, close_flip, groups, labels, "int8", random_weights=True)
    assert random["parity_ok"] and not random["agreement_ok"]
    assert not random["agreement_judged"]
    assert not parity.compare(close, close_flip, groups, labels, "int8")["parity_ok"]
    # bf16's floor holds on random weights too: only int8's scales follow trained ranges
    assert not parity.compare(close, close_flip, groups, labels, "bfloat16",
                              random_weights=True)["parity_ok"]


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


# ---- the peers users would pick ---------------------------------------------------------


def test_torch_autocast_only_where_the_hardware_has_it(tmp_path):
    assert peers.torch_autocast_dtypes("cpu", {"avx2", "avx512f", "avx512_bf16"}) == \
        ("bfloat16",)
    assert peers.torch_autocast_dtypes("cpu", {"avx512f", "amx_tile", "amx_bf16"}) == \
        ("bfloat16",)
    assert peers.torch_autocast_dtypes("cpu", {"avx2", "avx512f", "avx512_vnni"}) == ()
    assert peers.torch_autocast_dtypes("cpu", set()) == ()
    assert peers.torch_autocast_dtypes("cuda", set()) == ("bfloat16", "float16")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Fake CPU\nflags\t\t: fpu sse2 avx512f "
                       "amx_bf16 amx_tile\n\nprocessor\t: 1\n")
    assert peers.cpu_flags(str(cpuinfo)) == {"fpu", "sse2", "avx512f", "amx_bf16", "amx_tile"}
    assert peers.cpu_flags(str(tmp_path / "none")) == frozenset()
    without = peers.detect("cpu", accelerator=False, flags={"avx2"})
    assert without.torch_autocast == () and "avx512_bf16" in without.skipped["torch-sorted[bf16]"]
    with_amx = peers.detect("cpu", accelerator=False, flags={"amx_bf16"})
    assert with_amx.torch_autocast == ("bfloat16",)
    assert "torch-sorted[bf16]" not in with_amx.skipped


def test_strategy_plans_with_peers():
    every = peers.Peers(torch_autocast=("bfloat16",), ort=True, flax_ort=True)
    keys = [s.key for s in plan_strategies(BenchOptions(), MODES["default"], available=every)]
    assert keys.count("torch-sorted[bf16]") == 4 and keys.count("ort-sorted") == 4
    assert keys.count("ort-sorted[int8]") == 4  # the same sweep as torch-sorted, best kept
    for key in ("flax-bucketed[int8]", "flax-ort", "flax-ort[int8]", "flax-bucketed[bf16]"):
        assert keys.count(key) == 1, key
    sweep = [s.batch_size for s in plan_strategies(BenchOptions(), MODES["default"],
                                                   available=every) if s.key == "ort-sorted"]
    assert tuple(sweep) == (8, 16, 32, 64)
    fp32 = [s.key for s in plan_strategies(BenchOptions(dtype="float32"), MODES["default"],
                                           available=every)]
    assert not [k for k in fp32 if "[" in k] and "ort-sorted" in fp32 and "flax-ort" in fp32
    only = [s.key for s in plan_strategies(BenchOptions(only=["ort-sorted"]), MODES["default"],
                                           available=every)]
    assert set(only) == {"torch-pipeline", "ort-sorted", "ort-sorted[int8]"}
    gpu = peers.Peers(torch_autocast=("bfloat16", "float16"))
    keys = [s.key for s in plan_strategies(BenchOptions(), MODES["default"], True, gpu)]
    assert keys.count("torch-sorted[fp16]") == 4 and "flax-bucketed[default-prec]" in keys
    # what a host cannot run is said, for the rows this run would have run
    none = peers.Peers(skipped={"ort-sorted": "onnxruntime not installed",
                                "flax-bucketed[int8]": "no int8 engine"})
    assert skipped_notes(BenchOptions(), none) == [
        "ort-sorted not run here: onnxruntime not installed",
        "flax-bucketed[int8] not run here: no int8 engine"]
    assert skipped_notes(BenchOptions(dtype="float32", only=["ort-sorted"]), none) == [
        "ort-sorted not run here: onnxruntime not installed"]
    with pytest.raises(ValueError, match="int8 runs only"):
        Strategy("flax-naive", quantize="int8")
    with pytest.raises(ValueError, match="float16 is a PyTorch"):
        Strategy("flax-bucketed", "float16")
    assert Strategy("torch-sorted", "bfloat16", 8).key == "torch-sorted[bf16]"


def _standin_flax_onnx_export(flax_folder, work):
    """What `flaxsent export --format onnx --quantize int8` gives the onnxruntime runtime, made
    without jax2onnx (its exporter's dependency): config, tokenizer, model.onnx (the
    standard interface, which the runtime runs bucketed) and model_quantized.onnx."""
    import shutil
    dst = work / "flax-onnx"
    dst.mkdir(parents=True)
    for f in sorted(os.listdir(flax_folder)):
        if f.endswith((".json", ".txt")) and f != "bench_default.json":
            shutil.copy(os.path.join(flax_folder, f), dst / f)
    peers.export_onnx(flax_folder, dst / "model.onnx")
    peers.quantize_int8(dst / "model.onnx", dst / "model_quantized.onnx", per_channel=True)
    return str(dst), {"export_s": 0.0, "prepare_s": 0.0, "command": "stand-in (test)",
                      "files": ["model.onnx", "model_quantized.onnx"]}


def test_onnx_runtime_peers_quick_end_to_end(tmp_path, model_cache, monkeypatch):
    """ort-sorted fp32 matches PyTorch to 1e-4, the int8 rows report their agreement, and
    flax-ort runs through flaxsent's onnxruntime runtime (on a stand-in export where the
    exporter's jax2onnx is missing); each gets a fresh-process probe."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    if peers.missing_modules(["jax2onnx"]):
        monkeypatch.setattr(peers, "FLAX_ORT_EXTRA", peers.ORT_EXTRA)
        monkeypatch.setattr(peers, "export_flax_onnx", _standin_flax_onnx_export)
    result = run_harness(_quiet(out=tmp_path, model_cache=model_cache,
                                only=["ort-sorted", "flax-ort"]))
    record = json.loads((tmp_path / "results.json").read_text())
    rows = {r["key"]: r for r in record["strategies"]}
    assert set(rows) == {"torch-pipeline", "ort-sorted", "ort-sorted[int8]", "flax-ort",
                         "flax-ort[int8]"}, record["notes"]
    assert record["failed_strategies"] == []
    ort = rows["ort-sorted"]
    assert ort["family"] == "ort" and ort["threads"] == record["settings"]["threads"]
    assert ort["parity"]["tolerance_class"] == "float32" and ort["parity"]["max_abs"] <= 1e-4
    assert ort["parity_ok"] is True
    assert [v["batch_size"] for v in ort["variants"]] == [8, 16, 32, 64]
    assert ort["probe_error"] is None and ort["first_result_cold_s"] > 0
    for key in ("ort-sorted[int8]", "flax-ort[int8]"):
        p = rows[key]["parity"]
        assert p["tolerance_class"] == "int8" and 0 <= p["argmax_agreement"] <= 1
        assert rows[key]["parity_ok"] == (p["agreement_ok"] and p["max_abs"] <= p["limit"])
    assert rows["flax-ort"]["parity"]["max_abs"] <= 1e-4 and rows["flax-ort"]["parity_ok"]
    assert rows["flax-ort"]["compiled_shapes"] and rows["flax-ort"]["probe_error"] is None
    prepared = record["peers"]["prepared"]["onnxruntime"]
    assert prepared["fused_operators"].get("Attention", 0) == 2  # one per layer: BERT-fused
    assert prepared["int8_weights"] in ("per_tensor", "per_channel")
    chosen = prepared["int8_variants"][prepared["int8_weights"]]["argmax_agreement"]
    assert chosen == max(v["argmax_agreement"] for v in prepared["int8_variants"].values())
    assert min(prepared["export_s"], prepared["fuse_s"], prepared["quantize_s"]) > 0
    md = (tmp_path / "results.md").read_text()
    assert "| ort-sorted (b" in md and "| int8 |" in md and "prepared once and untimed" in md
    assert result.exit_code == (0 if record["parity_ok"] else 1)


# ---- parity of reduced precision, model FLOPs, corpus size ------------------------------


def test_int8_is_judged_by_agreement_and_the_logits_scale():
    n = 1000
    ref = np.zeros((n, 2), np.float32)
    ref[:, 0] = 4.0  # mean |logit| 2: the |Δ| limit is 0.25 x 2
    groups, labels = np.zeros(n, int), ["all"]
    assert parity.tolerance_for("float32", "highest", "int8") == "int8"
    assert parity.tolerance_for("float16") == parity.tolerance_for("bfloat16") == "bfloat16"
    assert parity.tolerance_for("float32", "default") == "bfloat16"
    assert parity.tolerance_for("float32") == "float32"
    close = parity.compare(ref, ref + 0.45, groups, labels, "int8")
    assert close["limit"] == pytest.approx(0.5) and close["parity_ok"]
    assert not parity.compare(ref, ref + 0.45, groups, labels, "bfloat16")["parity_ok"]
    assert not parity.compare(ref, ref + 0.55, groups, labels, "int8")["parity_ok"]
    flipped = ref.copy()
    flipped[:14] = [0.0, 0.1]  # 98.6% agree
    got = parity.compare(ref, flipped, groups, labels, "int8")
    assert got["argmax_agreement"] == pytest.approx(0.986) and got["agreement_ok"]
    flipped[:16] = [0.0, 0.1]  # 98.4%: below the floor, reported as such
    got = parity.compare(ref, flipped, groups, labels, "int8")
    assert not got["agreement_ok"] and not got["parity_ok"]
    row = {"parity": got, "parity_ok": False}
    assert report._parity_cell(row) == "**FAIL** (argmax < 98.5%)"


def test_model_flops_of_the_tiny_config_by_hand():
    from flaxsent.core.config import BASE, TINY  # TINY: d 32, FFN 37, 2 layers, 2 labels
    # per layer 4 x 32^2 + 2 x 32 x 37 = 6,464 matmul weights; 2 layers: 12,928
    assert flops.matmul_params(TINY) == 12_928 == flops.matmul_params(TINY.to_hf_dict())
    # sentences of 5 and 10 tokens: 2 x 12,928 x 15 = 387,840 (matmuls)
    # + 4 x 2 layers x 32 x (5^2 + 10^2) = 32,000 (attention) + 2 x 2 x (32^2 + 32 x 2) = 4,352
    assert flops.model_flops(TINY, [5, 10]) == 424_192
    # DistilBERT-base: about 85 MFLOP a token in its matmuls
    assert 2 * flops.matmul_params(BASE) == 84_934_656
    record = {"dtype": "bfloat16", "median_s": 1e-6, "precision": "default", "quantize": None}
    flops.add_flops_figures(record, 424_192, "NVIDIA H100 80GB HBM3")
    assert record["model_tflops_per_s"] == pytest.approx(0.424192)
    assert record["peak_tflops"] == 989.0 and record["mfu"] == pytest.approx(0.424192 / 989)
    fp32 = {"dtype": "float32", "median_s": 1.0, "precision": "highest", "quantize": None}
    flops.add_flops_figures(fp32, 67e12, "NVIDIA H200")
    assert fp32["peak_kind"] == "fp32" and fp32["mfu"] == pytest.approx(1.0)
    assert flops.peak_tflops("NVIDIA H100 PCIe", "tf32") == 378.0
    assert flops.peak_tflops("NVIDIA A100-SXM4-80GB", "bf16") == 312.0
    assert flops.peak_tflops("NVIDIA L4", "fp32") == 30.3
    assert flops.arithmetic({"dtype": "float32", "precision": "default"}) == "tf32"
    assert flops.arithmetic({"dtype": "float32", "quantize": "int8"}) == "int8"
    cpu = {"dtype": "float32", "median_s": 2.0, "precision": "highest", "quantize": None}
    flops.add_flops_figures(cpu, 4e9, None)
    assert cpu["model_tflops_per_s"] == pytest.approx(2e-3) and cpu["mfu"] is None
    assert flops.peak_tflops("TPU v5 lite", "bf16") is None


def test_corpus_size_grows_on_accelerators_and_follows_sentences(tmp_path):
    default, quick = MODES["default"], MODES["quick"]
    assert corpus_size(BenchOptions(), default) == 872
    assert corpus_size(BenchOptions(), default, accelerator=True) == 872 * ACCELERATOR_SCALE
    assert corpus_size(BenchOptions(quick=True), quick, accelerator=True) == 64
    assert corpus_size(BenchOptions(sentences=5000), default, accelerator=True) == 5000
    texts, info = _corpus(BenchOptions(sentences=100), default)
    assert len(texts) == 100 == info["n"] and "generate_corpus(100," in info["generator"]
    path = tmp_path / "s.txt"
    path.write_text("".join(f"s{i}\n" for i in range(30)))
    texts, info = _corpus(BenchOptions(data=str(path), sentences=7), default)
    assert texts == [f"s{i}" for i in range(7)] and "--sentences" in info["note"]
    texts, _ = _corpus(BenchOptions(data=str(path)), default, accelerator=True)
    assert len(texts) == 30  # a file is read whole unless --sentences says otherwise
    parser = argparse.ArgumentParser(prog="flaxsent")
    add_bench_parser(parser.add_subparsers(dest="command"))
    assert parser.parse_args(["bench", "--sentences", "20000"]).sentences == 20000
