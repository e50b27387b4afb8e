"""flaxsent explain: texts from arguments and a file, outputs equal to Classifier.explain, and
one-line errors with exit 2."""

import json

import numpy as np
import pytest

from flaxsent import Classifier
from flaxsent.cli import main
from flaxsent.errors import ExplainError
from flaxsent.explain.run import explain_all, gather_texts


def run(capsys, *argv):
    capsys.readouterr()
    code = main(["explain", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_parser_offers_exactly_the_library_methods():
    """The parser keeps its own copy (building it imports no jax): it must not drift."""
    from flaxsent.cli.explain import METHODS as offered
    from flaxsent.core.attribution import METHODS
    assert offered == METHODS


def test_texts_come_from_the_arguments_then_the_file(tmp_path):
    f = tmp_path / "in.jsonl"
    f.write_text('{"text": "b"}\n{"text": "c"}\n', encoding="utf-8")
    assert gather_texts(["a"], str(f)) == ["a", "b", "c"]
    with pytest.raises(ExplainError, match="no text to explain"):
        gather_texts([], None)
    with pytest.raises(ExplainError, match="--file"):
        gather_texts([], str(tmp_path / "missing.txt"))


def test_the_progress_bar_counts_every_copy(tiny_flax, tmp_path):
    clf = Classifier.from_pretrained(tiny_flax, cache_dir=tmp_path)
    counted = []
    clf.explain(["fun", "the plot was dull"], steps=7, progress=counted.append)
    assert sum(counted) == 14
    assert len(explain_all(clf, ["fun"], steps=3, progress=False)) == 1


def test_cli_writes_what_the_classifier_explains(capsys, tiny_flax, tmp_path):
    f = tmp_path / "in.txt"
    f.write_text("awful acting , boring plot\nnot good\n", encoding="utf-8")
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "--model", tiny_flax, "the movie was great", "--file", f,
                            "--target", "positive", "--steps", 20, "--out", out,
                            "--no-progress")
    assert code == 0, err
    assert stdout.startswith("1. POSITIVE (") and "wrote" in err
    records = [json.loads(line) for line in
               (out / "attributions.jsonl").read_text(encoding="utf-8").splitlines()]
    texts = ["the movie was great", "awful acting , boring plot", "not good"]
    assert [r["text"] for r in records] == texts
    clf = Classifier.from_pretrained(tiny_flax, cache_dir=tmp_path / "cache")
    for r, e in zip(records, clf.explain(texts, target="POSITIVE", steps=20), strict=True):
        assert r["words"] == list(e.words) and r["target"] == "POSITIVE" and r["steps"] == 20
        np.testing.assert_allclose(r["word_attributions"], e.word_attributions, rtol=1e-6)
        assert abs(r["gap"]) < 0.05
    assert (out / "explain.html").read_text(encoding="utf-8").count('class="w"') >= 9
    assert (out / "explain.png").stat().st_size > 1000


@pytest.mark.parametrize("argv,message", [
    (["", "--out", "o"], "text 0 is empty"),
    (["fine", "--target", "MAYBE", "--out", "o"], "target 'MAYBE'"),
    (["fine", "--steps", "0", "--out", "o"], "--steps 0"),
    (["--out", "o"], "no text to explain"),
    (["--file", "missing.txt", "--out", "o"], "--file"),
])
def test_cli_user_errors_are_one_line(capsys, tiny_flax, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "--model", tiny_flax, "--no-progress", *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("flaxsent explain: error:"), err
    assert message in err
