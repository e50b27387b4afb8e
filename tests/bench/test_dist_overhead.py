"""The Beam/Ray-vs-predict overhead bench: its arithmetic, and one real run on the tiny model."""

from __future__ import annotations

import json

import pytest
from flaxsent.bench.dist_overhead import (
    beam_in_child,
    main,
    markdown,
    ray_in_child,
    summarize,
    write_inputs,
)


def test_steady_rate_fixed_cost_and_overhead_from_two_sizes():
    walls = {"predict-txt": {10: 5.0, 40: 8.0},  # 30 rows in 3 s: 10/s, fixed 5 - 1 = 4 s
             "beam": {10: 15.0, 40: 21.0},  # 5/s, fixed 15 - 2 = 13 s
             "predict-parquet": {10: 6.0, 40: 9.0},
             "ray": {10: 20.0, 40: 19.5}}  # the big file was not slower: no rate
    out = summarize(walls, 10, 40)
    assert out["predict-txt"]["steady_sentences_per_s"] == 10.0
    assert out["predict-txt"]["fixed_s"] == 4.0
    assert out["beam"]["vs_predict"] == {"baseline": "predict-txt", "steady_rate_ratio": 0.5,
                                         "extra_fixed_s": 9.0, "wall_ratio_at_big": 2.625}
    assert out["ray"]["steady_sentences_per_s"] is None and out["ray"]["fixed_s"] is None
    assert out["ray"]["vs_predict"]["steady_rate_ratio"] is None
    table = markdown({"rows": [10, 40], "machine_label": "cpu", "model": "m",
                      "other_cpu_share": 0.0, "engines": out})
    assert "| beam | 15.0 | 21.0 | 5.0 | 13.0 | 0.50x, +9.0 s |" in table
    assert "| ray | 20.0 | 19.5 | n/a | n/a | n/a (more --rows) |" in table


def test_unknown_engine_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--engines", "beam,spark"])
    assert exc.value.code == 2
    assert "unknown ['spark']" in capsys.readouterr().err


def test_main_times_each_engine_at_two_sizes(tiny_flax, tmp_path):
    assert main(["--model", str(tiny_flax), "--rows", "8", "--engines", "predict-txt",
                 "--out", str(tmp_path)]) == 0  # a lost or duplicated row exits non-zero
    report = json.loads((tmp_path / "dist_overhead.json").read_text())
    assert report["rows"] == [2, 8] and list(report["engines"]) == ["predict-txt"]
    assert set(report["engines"]["predict-txt"]["wall_s"]) == {"2", "8"}
    assert report["model"] == str(tiny_flax) and "apache-beam" in report["versions"]
    assert (tmp_path / "dist_overhead.md").read_text().count("\n| predict-txt |") == 1


@pytest.mark.distributed_engines
def test_the_beam_and_ray_runs_write_every_row(tiny_flax, tmp_path):
    pytest.importorskip("apache_beam", reason="needs the beam extra")
    pytest.importorskip("ray", reason="needs the ray extra")
    txt, parquet = write_inputs(tmp_path, 12)
    beam = beam_in_child({"model": str(tiny_flax), "input": str(txt), "platform": "cpu",
                          "output": str(tmp_path / "beam.jsonl")})
    ray = ray_in_child({"model": str(tiny_flax), "input": str(parquet),
                        "output": str(tmp_path / "ray")})
    assert beam == {"rows_out": 12} and ray == {"rows_out": 12}
