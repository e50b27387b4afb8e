"""The file-vs-memory throughput benchmark runs end to end on the tiny model."""

import json

from flaxsent.bench.file_throughput import main


def test_file_throughput_report(tiny_flax, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["--model", str(tiny_flax), "--lines", "60", "--small-lines", "20",
                 "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["lines"] == 60
    assert report["in_memory_sentences_per_s"] > 0 and report["predict_sentences_per_s"] > 0
    assert set(report["predict_peak_rss_mib"]) == {"20", "60"}
    assert all(v > 0 for v in report["predict_peak_rss_mib"].values())
