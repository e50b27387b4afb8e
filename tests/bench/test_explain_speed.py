"""The attribution speed benchmark runs end to end on the tiny model, every row judged against
captum fp32."""

import json

from flaxsent.bench.explain_speed import main

from tests.helpers import texts


def test_explain_speed_times_both_engines_in_both_precisions(tiny_hf, tmp_path):
    data = tmp_path / "sentences.txt"
    data.write_text("\n".join(texts(6)) + "\n", encoding="utf-8")
    out = tmp_path / "report"
    assert main(["--model", str(tiny_hf), "--data", str(data), "--n", "6", "--steps", "4",
                 "--internal-batch-sizes", "2,4", "--pick-n", "2", "--out", str(out)]) == 0
    record = json.loads((out / "explain_speed.json").read_text())
    rows = {(r["engine"].split()[0], r["dtype"]): r for r in record["rows"]}
    assert set(rows) == {(e, d) for e in ("captum", "flaxsent") for d in ("float32", "bfloat16")}
    assert all(r["attributions_per_s"] > 0 and r["n"] == 6 for r in rows.values())
    assert rows["captum", "float32"]["vs_captum_fp32_max_relative"] == 0  # the reference
    # fp32: the same attributions; bf16, both engines: bf16's three digits, not a different
    # method
    assert rows["flaxsent", "float32"]["vs_captum_fp32_max_relative"] < 1e-4
    for engine in ("captum", "flaxsent"):
        assert 0 < rows[engine, "bfloat16"]["vs_captum_fp32_max_relative"] < 0.2
    assert "gaps_abs_median" in rows["flaxsent", "bfloat16"]
    assert "| flaxsent Classifier.explain" in (out / "explain_speed.md").read_text()
