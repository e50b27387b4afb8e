"""probe --explain: the value's own tokens found in each sentence, their attribution and the top
words in probe.json, probe.csv and the chart."""

import csv
import json

import pytest

from flaxsent import Classifier
from flaxsent.cli import main
from flaxsent.probe.attribution import value_spans
from flaxsent.probe.run import parse_template


@pytest.fixture(scope="module")
def clf(tiny_flax, tmp_path_factory):
    return Classifier.from_pretrained(tiny_flax, cache_dir=tmp_path_factory.mktemp("cache"))


def test_each_placeholders_value_is_found_among_the_sentences_tokens(clf):
    t = parse_template("{A} was filmed in {B}, said {A}.")
    sentence = t.fill({"A": "the actor", "B": "my film"})
    ids = clf.tokenizer.encode_batch([sentence])[0][0]
    spans = value_spans(clf, t, ("the actor", "my film"), ids)
    tokens = clf.tokenizer.tokens(ids)
    assert [tokens[a:b] for a, b in spans] == [["the", "actor"], ["my", "film"],
                                               ["the", "actor"]]


def test_a_value_glued_to_its_context_has_no_span(clf):
    t = parse_template("the fil{X}")
    ids = clf.tokenizer.encode_batch(["the film"])[0][0]  # "fil" alone is f ##i ##l
    assert value_spans(clf, t, ("m",), ids) is None


def test_probe_explain_adds_each_values_attribution_and_top_words(capsys, clf, tiny_flax,
                                                                   tmp_path):
    values = tmp_path / "values.txt"
    values.write_text("italy\nfrance\nthe movie\n", encoding="utf-8")  # [UNK], [UNK], 2 words
    out = tmp_path / "probe"
    code = main(["probe", "--model", str(tiny_flax), "--template", "it was filmed in {X} .",
                 "--values", str(values), "--explain", "--steps", "20", "--label", "POSITIVE",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    record = json.loads((out / "probe.json").read_text(encoding="utf-8"))
    sentences = [s["sentence"] for s in record["sentences"]]
    explained = clf.explain(sentences, target="POSITIVE", steps=20)
    start = len(clf.tokenizer.encode_batch(["it was filmed in"])[0][0]) - 1  # [CLS] + words
    for row, e in zip(record["sentences"], explained, strict=True):
        n = len(clf.tokenizer.encode_batch([row["values"]["X"]])[0][0]) - 2
        own = e.attributions[start:start + n].sum()
        assert row["explain"]["value_attribution"] == pytest.approx(own, rel=1e-5, abs=1e-7)
        assert [w for w, _ in row["explain"]["top_words"]] == [w for w, _ in e.top(3)]
    with open(out / "probe.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[0]["value attribution"]) == \
        pytest.approx(record["sentences"][0]["explain"]["value_attribution"], rel=1e-6)
    assert rows[0]["top words"].count(";") == 2
    assert (out / "probe.png").stat().st_size > 1000
