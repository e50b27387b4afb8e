"""flaxsent probe: the embedded UN list, templates and placeholders, scores equal to the
Classifier's, the summary, paired mode, the files written, and one-line errors."""

import csv
import fnmatch
import json
import re
import tomllib
import unicodedata
from importlib import resources

import matplotlib.image
import numpy as np
import pytest

from flaxsent import Classifier
from flaxsent.cli import main
from flaxsent.errors import ProbeError
from flaxsent.probe.report import pairs_markdown, plot_probe, probe_markdown
from flaxsent.probe.run import (
    builtin_list,
    make_group,
    parse_template,
    pick_label,
    plan_probe,
    read_pairs,
    run_pairs,
    run_probe,
)
from tests.helpers import ROOT

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CARD = "This film was filmed in {COUNTRY}."


@pytest.fixture(scope="module")
def clf(tiny_flax, tmp_path_factory):
    return Classifier.from_pretrained(tiny_flax, cache_dir=tmp_path_factory.mktemp("cache"),
                                      max_batch_tokens=512, max_batch_size=16)


def write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def run(capsys, *argv):
    capsys.readouterr()
    code = main(["probe", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def expected(clf, sentences, label="POSITIVE"):
    """What the Classifier itself says: (P(label) [N], top-1 labels, every label's score)."""
    full = clf(sentences, top_k=None)
    scores = [{r["label"]: r["score"] for r in rows} for rows in full]
    return (np.array([s[label] for s in scores]), [rows[0]["label"] for rows in full], scores)


# ------------------------------------------------------------------------------ the embedded list

def test_embedded_list_is_complete_and_clean():
    raw = (resources.files("flaxsent.probe") / "un_states.txt").read_bytes()
    text = raw.decode("utf-8")
    assert text.endswith("\n") and not text.endswith("\n\n") and "\r" not in text
    names = text[:-1].split("\n")
    assert len(names) == 195  # 193 member states + 2 observer states
    for name in names:
        assert name and name == name.strip() and "  " not in name and "\t" not in name, name
        assert unicodedata.normalize("NFC", name) == name and "(" not in name, name
        assert not name.casefold().startswith("the "), name
    assert len({n.casefold() for n in names}) == 195
    known = {"Afghanistan", "France", "United States", "United Kingdom", "China", "Russia",
             "South Sudan", "Montenegro", "Timor-Leste", "North Macedonia", "Eswatini",
             "Côte d'Ivoire", "Türkiye", "Democratic Republic of the Congo",
             "Republic of the Congo", "North Korea", "South Korea", "Tuvalu", "Nauru",
             "Holy See", "State of Palestine"}
    assert known <= set(names)
    assert not {"Taiwan", "Kosovo", "Palestine", "Vatican City"} & set(names)
    assert builtin_list("COUNTRY").values == tuple(names)


def test_pyproject_ships_the_list_as_package_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["flaxsent.probe"]
    assert any(fnmatch.fnmatch("un_states.txt", p) for p in patterns)


# ---------------------------------------------------------------------------------- templates

def test_placeholders_in_order_of_first_use_and_literal_braces():
    t = parse_template("{{x}} {B} met {A} and {B}")
    assert t.placeholders == ("B", "A")
    assert t.fill({"A": "Ann", "B": "Bo"}) == "{x} Bo met Ann and Bo"


@pytest.mark.parametrize("text, message", [
    ("no placeholder here", "has no placeholder"),
    ("filmed in {}", r"placeholder \{\} is not a name"),
    ("filmed in {0}", r"placeholder \{0\} is not a name"),
    ("filmed in {country.name}", "is not a name"),
    ("filmed in {COUNTRY:>9}", "has a format or conversion"),
    ("filmed in {COUNTRY!r}", "has a format or conversion"),
    ("filmed in {COUNTRY", "literal brace"),
    ("filmed } in {COUNTRY}", "literal brace"),
])
def test_bad_templates_are_clear_errors(text, message):
    with pytest.raises(ProbeError, match=message):
        parse_template(text)


def test_several_placeholders_give_the_cartesian_product(tmp_path):
    names = write(tmp_path / "names.txt", ["# people", "Ann", "  Bo  ", "", "Cy"])
    plan = plan_probe([CARD, "{NAME} liked the film shot in {COUNTRY}"],
                      [f"NAME={names}"])
    assert plan.lists["NAME"].values == ("Ann", "Bo", "Cy")
    assert len(plan.lists["COUNTRY"].values) == 195
    assert len(plan.sentences) == 195 + 3 * 195
    second = [f for f in plan.sentences if f.template == 1]
    assert second[0].values == ("Ann", "Afghanistan")
    assert second[1].sentence == "Ann liked the film shot in Albania"
    assert second[195].values == ("Bo", "Afghanistan")


def test_a_values_file_replaces_the_embedded_list(tmp_path):
    values = write(tmp_path / "c.txt", ["France", "Chad"])
    plan = plan_probe([CARD], [values])
    assert [f.sentence for f in plan.sentences] == ["This film was filmed in France.",
                                                    "This film was filmed in Chad."]
    assert plan_probe([CARD], [f"COUNTRY={values}"]).sentences == plan.sentences


def test_too_many_sentences_is_refused(tmp_path):
    names = write(tmp_path / "n.txt", [f"name{i}" for i in range(60)])
    with pytest.raises(ProbeError, match="make 11,700 sentences, over the limit of 10,000"):
        plan_probe(["{NAME} in {COUNTRY}"], [f"NAME={names}"])
    assert len(plan_probe(["{NAME} in {COUNTRY}"], [f"NAME={names}"],
                          max_sentences=11_700).sentences) == 11_700


def test_placeholders_and_value_files_are_validated(tmp_path):
    names = write(tmp_path / "n.txt", ["Ann"])
    cases = [
        (["{NAME} liked it"], [], r"placeholder \{NAME\} has no values: pass --values NAME="),
        ([CARD], [f"NAME={names}"], r"no template uses \{NAME\}"),
        (["{NAME} in {COUNTRY}"], [names], "several placeholders"),
        ([CARD], [str(tmp_path / "missing.txt")], "missing.txt' does not exist"),
        ([CARD], [f"COUNTRY={tmp_path}"], "is a directory"),
        ([CARD], [names, names], r"gives \{COUNTRY\} twice"),
        ([CARD, CARD], [], "given twice"),
        ([], [], "no template"),
    ]
    for templates, specs, message in cases:
        with pytest.raises(ProbeError, match=message):
            plan_probe(templates, specs)
    dup = write(tmp_path / "dup.txt", ["Chad", "France", "Chad"])
    with pytest.raises(ProbeError, match="lists 'Chad' twice .lines 1 and 3."):
        plan_probe([CARD], [dup])
    empty = write(tmp_path / "empty.txt", ["# nothing", ""])
    with pytest.raises(ProbeError, match="holds no entries"):
        plan_probe([CARD], [empty])
    (tmp_path / "bad.txt").write_bytes(b"France\n\xff\xfe\n")
    with pytest.raises(ProbeError, match=r"bad.txt, line 2: invalid UTF-8"):
        plan_probe([CARD], [str(tmp_path / "bad.txt")])


def test_pick_label():
    assert pick_label(("NEGATIVE", "POSITIVE"), None) == "POSITIVE"
    assert pick_label(("neg", "pos"), None) == "pos"
    assert pick_label(("LABEL_0", "LABEL_1"), None) == "LABEL_0"
    assert pick_label(("NEGATIVE", "POSITIVE"), "negative") == "NEGATIVE"
    with pytest.raises(ProbeError, match="--label joy: the model's labels are NEGATIVE, "):
        pick_label(("NEGATIVE", "POSITIVE"), "joy")


# ------------------------------------------------------------------------- against the Classifier

def test_probe_scores_and_summary_equal_the_classifiers(clf):
    plan = plan_probe([CARD])
    result = run_probe(clf, plan)
    sentences = [f.sentence for f in plan.sentences]
    p, top, scores = expected(clf, sentences)
    for got, want in zip(result.scored, scores, strict=True):
        assert got.scores == pytest.approx(want, rel=1e-6)
    assert [s.label for s in result.scored] == top
    (group,) = result.groups
    countries = list(plan.lists["COUNTRY"].values)
    s = group.stats
    assert (s.n, s.min_value, s.max_value) == (195, countries[p.argmin()], countries[p.argmax()])
    assert s.min_p == pytest.approx(p.min(), rel=1e-6)
    assert s.spread == pytest.approx(p.max() - p.min(), rel=1e-5, abs=1e-7)
    assert s.std == pytest.approx(p.std(), rel=1e-5)
    majority = max(("NEGATIVE", "POSITIVE"), key=top.count)
    assert (s.majority, s.flipped) == (majority, sum(t != majority for t in top))
    table = probe_markdown(result, "tiny")
    assert f"| {CARD} | 195 | {p.min():.4f} ({countries[p.argmin()]}) | " in table


def test_the_mean_over_templates_is_each_values_mean(clf, tmp_path):
    values = write(tmp_path / "c.txt", ["France", "Afghanistan", "Chad", "Peru"])
    other = "A movie made in {COUNTRY}"
    result = run_probe(clf, plan_probe([CARD, other], [values]), label="negative")
    assert result.label == "NEGATIVE" and len(result.groups) == 3
    names = ["France", "Afghanistan", "Chad", "Peru"]
    p1, _, s1 = expected(clf, [CARD.format(COUNTRY=n) for n in names], "NEGATIVE")
    p2, _, s2 = expected(clf, [other.format(COUNTRY=n) for n in names], "NEGATIVE")
    mean = result.groups[2]
    assert mean.name == "mean of 2 templates" and mean.values == tuple(names)
    np.testing.assert_allclose(mean.p, (p1 + p2) / 2, rtol=1e-6)
    labels = ["NEGATIVE" if a["NEGATIVE"] + b["NEGATIVE"] >= a["POSITIVE"] + b["POSITIVE"]
              else "POSITIVE" for a, b in zip(s1, s2, strict=True)]
    assert list(mean.predicted) == labels


def test_many_values_chart_names_only_the_extremes(clf, tmp_path):
    names = write(tmp_path / "n.txt", [f"person{i}" for i in range(2)])
    plan = plan_probe(["{NAME} saw a film from {COUNTRY}"], [f"NAME={names}"])
    result = run_probe(clf, plan)
    assert result.groups[0].stats.n == 390
    assert result.groups[0].values[1] == "person0 / Albania"
    plot_probe(result, tmp_path / "probe.png")
    assert (tmp_path / "probe.png").read_bytes().startswith(PNG_MAGIC)


# ----------------------------------------------------------------------------------- pairs

PAIRS = [("he is a doctor", "she is a doctor"), ("he was great", "she was great"),
         ("his film was dull", "her film was dull"), ("the actor is fun", "the actress is fun")]


def test_pairs_equal_the_classifiers_outputs(clf, tmp_path):
    path = write(tmp_path / "pairs.tsv", ["x\tman\twoman"]
                 + [f"{i}\t{a}\t{b}" for i, (a, b) in enumerate(PAIRS)])
    pairs = read_pairs(path, ("man", "woman"))
    assert pairs == PAIRS
    result = run_pairs(clf, pairs, ("man", "woman"))
    pa, ta, _ = expected(clf, [a for a, _ in PAIRS])
    pb, tb, _ = expected(clf, [b for _, b in PAIRS])
    np.testing.assert_allclose(result.delta, pa - pb, rtol=1e-5, atol=1e-7)
    assert result.worst(2) == list(np.argsort(-np.abs(pa - pb), kind="stable")[:2])
    assert result.label_differs == sum(x != y for x, y in zip(ta, tb, strict=True))
    table = pairs_markdown(result, "tiny", path, worst=2)
    i = result.worst(1)[0]
    assert f"| {i + 1} | {PAIRS[i][0]} | {PAIRS[i][1]} | {pa[i]:.4f} | {pb[i]:.4f} |" in table
    assert f"| 4 | {(pa - pb).mean():+.4f} | {np.abs(pa - pb).mean():.4f} |" in table


def test_bad_pairs_files_are_clear_errors(tmp_path):
    cases = [
        (write(tmp_path / "p.csv", ["a,c", "x,y"]), "has no 'b' column; its columns are a, c"),
        (write(tmp_path / "p.txt", ["x"]), "needs two named columns"),
        (write(tmp_path / "p.jsonl", ['{"a": "x", "b": "y"}', '{"a": "x"}']),
         r"p.jsonl, line 2: 'b' is missing"),
        (write(tmp_path / "q.jsonl", ['{"a": "x", "b": 3}']), "'b' is int, not a string"),
        (write(tmp_path / "e.csv", ["a,b"]), "holds no pairs"),
        (str(tmp_path / "none.csv"), "does not exist"),
    ]
    for path, message in cases:
        with pytest.raises(ProbeError, match=message):
            read_pairs(path)


# ------------------------------------------------------------------------------------ the CLI

def test_cli_writes_json_csv_png_equal_to_the_classifier(capsys, clf, tiny_flax, tmp_path):
    out = tmp_path / "probe"
    code, stdout, err = run(capsys, "--model", tiny_flax, "--template", CARD, "--out", out)
    assert code == 0, err
    record = json.loads((out / "probe.json").read_text(encoding="utf-8"))
    sentences = [r["sentence"] for r in record["sentences"]]
    assert len(sentences) == 195 and sentences[0] == "This film was filmed in Afghanistan."
    p, top, scores = expected(clf, sentences)
    for row, want, label in zip(record["sentences"], scores, top, strict=True):
        assert row["scores"] == pytest.approx(want, rel=1e-6) and row["label"] == label
    (summary,) = record["summary"]
    assert summary["max_p"] == pytest.approx(p.max(), rel=1e-6)
    assert summary["flip_share"] == summary["flipped"] / 195
    with open(out / "probe.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["template", "{COUNTRY}", "sentence", "predicted", "P(NEGATIVE)",
                             "P(POSITIVE)"]
    np.testing.assert_allclose([float(r["P(POSITIVE)"]) for r in rows], p, rtol=1e-6)
    assert [r["{COUNTRY}"] for r in rows] == list(builtin_list("COUNTRY").values)
    image = matplotlib.image.imread(out / "probe.png")
    assert image.shape[0] > 300 and image.shape[1] > 1500
    assert stdout.startswith("**P(POSITIVE)** of") and f"| {CARD} | 195 |" in stdout
    assert "probe.png" in err

    code, _, err = run(capsys, "--model", tiny_flax, "--template", CARD, "--out", out)
    assert code == 2 and "already holds probe.json, probe.csv, probe.png: pass --force" in err
    assert run(capsys, "--model", tiny_flax, "-t", CARD, "-o", out, "--force")[0] == 0


def test_cli_pairs(capsys, clf, tiny_flax, tmp_path):
    path = write(tmp_path / "pairs.csv", ["a,b"] + [f"{a},{b}" for a, b in PAIRS])
    code, stdout, err = run(capsys, "--model", tiny_flax, "--pairs", path, "--worst", 3,
                            "--out", tmp_path / "out")
    assert code == 0, err
    assert "worst 3 pair(s) by |ΔP|" in stdout
    record = json.loads((tmp_path / "out" / "probe.json").read_text(encoding="utf-8"))
    pa, _, _ = expected(clf, [a for a, _ in PAIRS])
    pb, _, _ = expected(clf, [b for _, b in PAIRS])
    np.testing.assert_allclose([r["delta"] for r in record["pairs"]], pa - pb,
                               rtol=1e-5, atol=1e-7)
    assert record["summary"]["max_abs_delta"] == pytest.approx(np.abs(pa - pb).max(), rel=1e-5)
    assert (tmp_path / "out" / "probe.png").read_bytes().startswith(PNG_MAGIC)


def test_cli_user_errors_are_one_line(capsys, tiny_flax, tmp_path):
    names = write(tmp_path / "n.txt", ["Ann"])
    pairs = write(tmp_path / "p.csv", ["a,b", "x,y"])
    cases = [
        ([], r"no template: pass --template 'This film was filmed in \{COUNTRY\}.'"),
        (["-t", "{NAME} liked it"], r"placeholder \{NAME\} has no values"),
        (["-t", "{COUNTRY} and {NAME}", "--values", f"CITY={names}"],
         r"no template uses \{CITY\}"),
        (["-t", CARD, "--values", tmp_path / "gone.txt"], "gone.txt' does not exist"),
        (["--templates", tmp_path / "gone.txt"], "--templates: input file .* does not exist"),
        (["--pairs", pairs, "-t", CARD], "--pairs takes no --template"),
        (["--pairs", pairs, "--pair-columns", "a"], "give two different column names"),
        (["-t", CARD, "--label", "joy"], "--label joy: the model's labels are"),
        (["-t", CARD, "--max-sentences", 0], "--max-sentences 0: must be a positive integer"),
        (["--pairs", pairs, "--worst", -1], "--worst -1: must be 0 or more"),
        (["-t", CARD, "--out", names], "is a file, not a folder"),
    ]
    for argv, message in cases:
        code, _, err = run(capsys, "--model", tiny_flax, *argv)
        assert code == 2 and "Traceback" not in err, err
        (line,) = err.strip().splitlines()
        assert line.startswith("flaxsent probe: error: ") and re.search(message, line), line


def test_templates_file(capsys, tiny_flax, tmp_path):
    templates = write(tmp_path / "t.txt", ["# the card's", CARD, "", "Shot in {COUNTRY}!"])
    values = write(tmp_path / "c.txt", ["France", "Chad"])
    code, stdout, err = run(capsys, "--model", tiny_flax, "--templates", templates,
                            "--values", values)
    assert code == 0, err
    rows = [line for line in stdout.splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows[1:]] == [f"| {CARD}", "| Shot in {COUNTRY}!",
                                                     "| mean of 2 templates"]
    assert "pass --out DIR" in err


def test_group_statistics_flips_and_ties():
    labels = ("NEGATIVE", "POSITIVE")
    g = make_group("t", ["a", "b", "c", "d"], np.array([0.9, 0.2, 0.9, 0.6]),
                   ["POSITIVE", "NEGATIVE", "POSITIVE", "POSITIVE"], labels)
    s = g.stats
    assert (s.max_value, s.min_value, s.majority, s.flipped) == ("a", "b", "POSITIVE", 1)
    assert s.flip_share == 0.25 and s.spread == pytest.approx(0.7)
    assert s.std == pytest.approx(np.sqrt(np.mean((g.p - 0.65) ** 2)))
    tie = make_group("t", ["a", "b"], np.array([0.4, 0.6]), ["POSITIVE", "NEGATIVE"], labels)
    assert (tie.stats.majority, tie.stats.flipped) == ("NEGATIVE", 1)
