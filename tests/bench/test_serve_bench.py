"""The serving bench end to end (tiny model, short windows): both real servers, its reports."""

import json
import os

import pytest
from flaxsent.bench.serve_bench import RequestStream, main
from flaxsent.bench.serve_load import percentiles

from tests.helpers import ROOT


def test_quick_serve_bench_runs_both_servers_and_writes_its_reports(tmp_path, monkeypatch,
                                                                     capsys):
    monkeypatch.setenv("FLAXSENT_BENCH_CACHE", str(tmp_path / "models"))
    monkeypatch.setenv("FLAXSENT_CACHE_DIR", str(tmp_path / "jax"))
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the servers' torch: no spinning on busy cores
    out = tmp_path / "out"
    code = main(["--quick", "--clients", "1,2", "--duration", "0.3", "--warmup", "0.1",
                 "--out", str(out)])
    assert code == 0
    record = json.loads((out / "serve.json").read_text())
    assert (out / "serve.png").stat().st_size > 10_000
    assert [s["name"] for s in record["servers"]] == ["flaxsent", "pipeline"]
    for server in record["servers"]:
        assert [lv["clients"] for lv in server["levels"]] == [1, 2]
        for level in server["levels"]:
            assert level["errors"] == 0 and level["requests"] >= 2 * level["clients"]
            assert level["sentences_per_s"] > 0
            lat = level["latency_ms"]
            assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    flax_levels = record["servers"][0]["levels"]
    assert all(lv["batching"]["device_batches"] >= 1 for lv in flax_levels)
    # flaxsent serve and the transformers pipeline answer the same requests alike
    parity = record["parity"]
    assert parity["labels_agree"] == parity["sentences"] > 0
    assert parity["max_abs_score_diff"] < 1e-5
    assert record["direct_classifier"]["latency_ms"]["p50"] > 0
    assert set(record["goals"]) == {"p50_vs_direct_at_1"}  # no 64-client level was run
    table = (out / "serve.md").read_text()
    assert table.strip() == capsys.readouterr().out.strip()
    assert "| 2 | pipeline |" in table and "seeded random weights" in table


def test_request_stream_is_the_same_for_every_server():
    texts = [f"sentence {i}" for i in range(50)]
    a, b = RequestStream(texts, seed=3), RequestStream(texts, seed=3)
    first = [a() for _ in range(100)]
    assert first == [b() for _ in range(100)]
    assert {len(r) for r in first} == set(range(1, 9))
    assert all(len(set(r)) == len(r) and set(r) <= set(texts) for r in first)


def test_percentiles():
    got = percentiles([float(v) for v in range(1, 101)])
    assert got["p50"] == pytest.approx(50.5) and got["p99"] == pytest.approx(99.01)
    assert got["max"] == 100 and got["mean"] == 50.5
    assert percentiles([]) == dict.fromkeys(("p50", "p95", "p99", "mean", "max"))


def test_bad_options_are_one_line_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--clients", "0,8"])
    assert exit_info.value.code == 2
    assert "client counts must be >= 1" in capsys.readouterr().err
