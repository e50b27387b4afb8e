"""Template and paired probes: how much a classifier's score moves when only a name changes.

A template probe fills each `{PLACEHOLDER}` of one or more templates from a value list and
classifies every sentence; the model card's COUNTRY check is `This film was filmed in {COUNTRY}.`
over the embedded list of the 193 UN member states and the 2 observer states. A template with
several placeholders is filled with every combination of their values (the cartesian product,
in the order the placeholders first appear), bounded by `max_sentences` over the whole run.
A paired probe classifies two sentences a row (`he` / `she` swaps, say) and compares them.

Placeholders are `{NAME}` with NAME a Python identifier; `{{` and `}}` are literal braces.
Value and template files hold one entry a line: surrounding whitespace is stripped, blank lines
and lines starting with `#` are skipped, and a repeated entry is an error.

The embedded list (`flaxsent/probe/un_states.txt`) uses the UN's short names, with the formal
ones cut to the name commonly written in English (Bolivia, Iran, Laos, Micronesia, Moldova,
North Korea, Russia, South Korea, Syria, Tanzania, Venezuela, Vietnam, United Kingdom, United
States, Netherlands, Brunei, Republic of the Congo) and no leading article, so a template that
needs one ("filmed in the United States") reads slightly off for those names.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np

from flaxsent.errors import ProbeError, RecordsError
from flaxsent.io.readers import read_records

if TYPE_CHECKING:
    from flaxsent.core.classifier import Classifier

DEFAULT_MAX_SENTENCES = 10_000
BUILTIN_LISTS = {"COUNTRY": "un_states.txt"}  # placeholder -> file beside this module
POSITIVE_NAMES = ("positive", "pos")


# ------------------------------------------------------------------------------------ templates

@dataclasses.dataclass(frozen=True)
class Template:
    """One template and its distinct placeholder names, in order of first appearance."""

    text: str
    placeholders: tuple[str, ...]

    def fill(self, values: Mapping[str, str]) -> str:
        """The sentence with every placeholder replaced by its value."""
        return self.text.format_map(values)


def parse_template(text: str) -> Template:
    """Parse and validate one template: named placeholders only, no format specs, at least one."""
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError as e:  # unmatched braces
        raise ProbeError(f"template {text!r}: {e}; write {{{{ or }}}} for a literal brace") \
            from None
    fields = []
    for _, name, spec, conv in parts:
        if name is not None:
            _check_field(text, name, spec, conv)
            fields.append(name)
    if not fields:
        raise ProbeError(f"template {text!r} has no placeholder: mark the part to vary, "
                         "e.g. {COUNTRY}")
    return Template(text, tuple(dict.fromkeys(fields)))


def _check_field(text: str, name: str, spec: str, conv: str | None) -> None:
    if not name.isidentifier():
        shown = "{" + name + "}"
        raise ProbeError(f"template {text!r}: placeholder {shown} is not a name: use letters, "
                         "digits and _ (e.g. {COUNTRY})")
    if spec or conv:
        raise ProbeError(f"template {text!r}: placeholder {{{name}}} has a format or conversion;"
                         f" write plain {{{name}}}")


# ----------------------------------------------------------------------------------- value lists

@dataclasses.dataclass(frozen=True)
class ValueList:
    """The values of one placeholder and where they came from (a file, or the embedded list)."""

    name: str
    values: tuple[str, ...]
    source: str


def read_list(path: str, what: str) -> list[str]:
    """The entries of a one-per-line file (stripped; blank and `#` lines skipped; no repeats)."""
    seen: dict[str, int] = {}
    try:
        with read_records(path, fmt="txt") as reader:
            for record in reader:
                if record.error is not None:
                    raise ProbeError(f"{what} {reader.where(record.line)}: {record.error}")
                entry = record.text.strip()
                if not entry or entry.startswith("#"):
                    continue
                if entry in seen:
                    raise ProbeError(f"{what} {path!r} lists {entry!r} twice (lines "
                                     f"{seen[entry]} and {record.line}): keep one")
                seen[entry] = record.line
    except RecordsError as e:
        raise ProbeError(f"{what}: {e}") from None
    if not seen:
        raise ProbeError(f"{what} {path!r} holds no entries")
    return list(seen)


def builtin_list(name: str) -> ValueList:
    """An embedded value list by placeholder name (COUNTRY: the UN member and observer states)."""
    ref = resources.files("flaxsent.probe") / BUILTIN_LISTS[name]
    with resources.as_file(ref) as path:
        values = read_list(str(path), "embedded list")
    return ValueList(name, tuple(values), f"embedded: {BUILTIN_LISTS[name]}")


def parse_values_option(spec: str) -> tuple[str | None, str]:
    """`--values NAME=FILE` -> (NAME, FILE); `--values FILE` -> (None, FILE)."""
    name, sep, path = spec.partition("=")
    if sep and name.isidentifier():
        return name, path
    return None, spec


def resolve_lists(templates: Sequence[Template], specs: Sequence[str]) -> dict[str, ValueList]:
    """The value list of every placeholder the templates use, from `--values` or built in."""
    used = list(dict.fromkeys(p for t in templates for p in t.placeholders))
    shown = ", ".join("{" + p + "}" for p in used)
    files: dict[str, str] = {}
    for spec in specs:
        name, path = parse_values_option(spec)
        if name is None:
            if len(used) != 1:
                raise ProbeError(f"--values {spec}: the templates use several placeholders "
                                 f"({shown}); say which with --values NAME={spec}")
            name = used[0]
        if name not in used:
            raise ProbeError(f"--values {spec}: no template uses {{{name}}} (placeholders: "
                             f"{shown})")
        if name in files:
            raise ProbeError(f"--values gives {{{name}}} twice ({files[name]!r} and {path!r})")
        files[name] = path
    lists = {}
    for name in used:
        if name in files:
            lists[name] = ValueList(name, tuple(read_list(files[name], f"--values {name}")),
                                    files[name])
        elif name in BUILTIN_LISTS:
            lists[name] = builtin_list(name)
        else:
            builtin = ", ".join("{" + n + "}" for n in BUILTIN_LISTS)
            raise ProbeError(f"placeholder {{{name}}} has no values: pass --values {name}=FILE "
                             f"(one value a line; only {builtin} has a built-in list)")
    return lists


# --------------------------------------------------------------------------------- the sentences

@dataclasses.dataclass(frozen=True)
class Filled:
    """One sentence of a template probe: its template (index), values and text."""

    template: int
    values: tuple[str, ...]
    sentence: str


@dataclasses.dataclass(frozen=True)
class ProbePlan:
    """Everything a template probe will classify, checked before any model is loaded."""

    templates: tuple[Template, ...]
    lists: dict[str, ValueList]
    sentences: tuple[Filled, ...]


def plan_probe(templates: Sequence[str], value_specs: Sequence[str] = (), *,
               max_sentences: int = DEFAULT_MAX_SENTENCES) -> ProbePlan:
    """Parse the templates, find the value lists and fill them: the cartesian product of each
    template's placeholders, all templates together at most `max_sentences` sentences."""
    if not templates:
        raise ProbeError("no template: pass --template 'This film was filmed in {COUNTRY}.' "
                         "or --templates FILE")
    parsed = tuple(parse_template(t) for t in templates)
    repeated = [t for t, n in Counter(templates).items() if n > 1]
    if repeated:
        raise ProbeError(f"template {repeated[0]!r} is given twice: keep one")
    lists = resolve_lists(parsed, value_specs)
    sizes = [math.prod(len(lists[p].values) for p in t.placeholders) for t in parsed]
    if sum(sizes) > max_sentences:
        raise ProbeError(f"the templates and values make {sum(sizes):,} sentences, over the "
                         f"limit of {max_sentences:,}: shorten a value list or raise "
                         "--max-sentences")
    sentences = []
    for i, t in enumerate(parsed):
        for combo in itertools.product(*(lists[p].values for p in t.placeholders)):
            sentences.append(Filled(i, combo, t.fill(dict(zip(t.placeholders, combo,
                                                              strict=True)))))
    return ProbePlan(parsed, lists, tuple(sentences))


# ------------------------------------------------------------------------------------ statistics

def pick_label(labels: Sequence[str], wanted: str | None) -> str:
    """`wanted` among the model's labels (case-insensitive), else its positive label, else the
    first."""
    folded = {str(label).casefold(): str(label) for label in reversed(labels)}
    if wanted is not None:
        if wanted.casefold() not in folded:
            raise ProbeError(f"--label {wanted}: the model's labels are "
                             f"{', '.join(map(str, labels))}")
        return folded[wanted.casefold()]
    return next((folded[n] for n in POSITIVE_NAMES if n in folded), str(labels[0]))


@dataclasses.dataclass(frozen=True)
class SentenceScores:
    """One sentence's scores (label -> probability, the model's label order) and its label."""

    sentence: str
    scores: dict[str, float]
    label: str


def score(clf: Classifier, sentences: Sequence[str]) -> list[SentenceScores]:
    """Classify `sentences` through the engine; scores exactly as `clf(..., top_k=None)`."""
    out = []
    for text, row in zip(sentences, clf.logits(sentences), strict=True):
        ranked = clf.format_scores(row, top_k=None)
        by_label = {r["label"]: r["score"] for r in ranked}
        out.append(SentenceScores(text, {str(k): by_label[k] for k in clf.labels},
                                  ranked[0]["label"]))
    return out


@dataclasses.dataclass(frozen=True)
class GroupStats:
    """The summary of one group: min and max with their values, spread, std, label flips."""

    n: int
    min_value: str
    min_p: float
    max_value: str
    max_p: float
    spread: float
    std: float
    majority: str
    flipped: int

    @property
    def flip_share(self) -> float:
        """The share of values whose predicted label differs from the majority label."""
        return self.flipped / self.n


@dataclasses.dataclass(frozen=True)
class Group:
    """P(label) per value of one template (or the values' mean over the templates)."""

    name: str
    values: tuple[str, ...]
    p: np.ndarray  # [V]
    predicted: tuple[str, ...]
    stats: GroupStats


def make_group(name: str, values: Sequence[str], p: np.ndarray, predicted: Sequence[str],
               labels: Sequence[str]) -> Group:
    """A group and its statistics: min and max (first on ties), spread, population std, the
    majority label (ties: the model's label order) and how many values are predicted otherwise."""
    counts = Counter(predicted)
    majority = max(labels, key=lambda label: (counts[label], -labels.index(label)))
    lo, hi = int(np.argmin(p)), int(np.argmax(p))
    stats = GroupStats(len(p), values[lo], float(p[lo]), values[hi], float(p[hi]),
                       float(p[hi] - p[lo]), float(np.std(p)), majority,
                       len(p) - counts[majority])
    return Group(name, tuple(values), p, tuple(predicted), stats)


def display_value(values: Sequence[str]) -> str:
    """A value combination as one string: `France`, or `France / Alice` for several."""
    return " / ".join(values)


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """A finished template probe: the plan, every sentence's scores, and the statistics."""

    plan: ProbePlan
    labels: tuple[str, ...]
    label: str
    scored: tuple[SentenceScores, ...]
    groups: tuple[Group, ...]


def run_probe(clf: Classifier, plan: ProbePlan, label: str | None = None) -> ProbeResult:
    """Classify every sentence of `plan`; statistics per template, plus the mean per value over
    the templates when there are several and they all use the same placeholders."""
    labels = tuple(str(x) for x in clf.labels)
    label = pick_label(labels, label)
    scored = score(clf, [f.sentence for f in plan.sentences])
    groups = []
    for i, t in enumerate(plan.templates):
        rows = [(f, s) for f, s in zip(plan.sentences, scored, strict=True) if f.template == i]
        groups.append(make_group(t.text, [display_value(f.values) for f, _ in rows],
                                 np.array([s.scores[label] for _, s in rows]),
                                 [s.label for _, s in rows], labels))
    if len(plan.templates) > 1 and len({t.placeholders for t in plan.templates}) == 1:
        groups.append(_mean_group(plan, scored, labels, label))
    return ProbeResult(plan, labels, label, tuple(scored), tuple(groups))


def _mean_group(plan: ProbePlan, scored: Sequence[SentenceScores], labels: tuple[str, ...],
                label: str) -> Group:
    """Each value's scores averaged over the templates; its label is the mean's argmax."""
    by_value: dict[tuple[str, ...], list[list[float]]] = {}
    for f, s in zip(plan.sentences, scored, strict=True):
        by_value.setdefault(f.values, []).append([s.scores[k] for k in labels])
    means = np.array([np.mean(rows, axis=0) for rows in by_value.values()])  # [V, C]
    predicted = [labels[int(np.argmax(m))] for m in means]
    return make_group(f"mean of {len(plan.templates)} templates",
                      [display_value(v) for v in by_value], means[:, labels.index(label)],
                      predicted, labels)


# --------------------------------------------------------------------------------------- pairs

@dataclasses.dataclass(frozen=True)
class PairsResult:
    """A finished paired probe: both sides' scores, ΔP = P(a) - P(b) of `label` per pair."""

    columns: tuple[str, str]
    labels: tuple[str, ...]
    label: str
    a: tuple[SentenceScores, ...]
    b: tuple[SentenceScores, ...]
    delta: np.ndarray  # [N]

    def worst(self, k: int) -> list[int]:
        """The indices of the `k` pairs with the largest |ΔP|, largest first (ties: file order)."""
        return [int(i) for i in np.argsort(-np.abs(self.delta), kind="stable")[:k]]

    @property
    def label_differs(self) -> int:
        """How many pairs get a different predicted label on each side."""
        return sum(x.label != y.label for x, y in zip(self.a, self.b, strict=True))


def parse_pair_columns(spec: str) -> tuple[str, str]:
    """`--pair-columns A,B` -> (A, B): two different, non-empty column names."""
    parts = tuple(p.strip() for p in spec.split(","))
    if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
        raise ProbeError(f"--pair-columns {spec!r}: give two different column names, e.g. a,b")
    return parts


def read_pairs(path: str, columns: tuple[str, str] = ("a", "b"), fmt: str | None = None,
               ) -> list[tuple[str, str]]:
    """The (a, b) sentence pairs of a CSV, TSV, JSONL or Parquet file with columns `columns`."""
    col_a, col_b = columns
    pairs = []
    try:
        with read_records(path, text_column=col_a, fmt=fmt) as reader:
            if reader.fmt == "txt":
                raise ProbeError(f"--pairs {path!r}: a pairs file needs two named columns: "
                                 f"use CSV, TSV, JSONL or Parquet with columns {col_a}, {col_b}")
            if reader.columns is not None and col_b not in reader.columns:
                raise ProbeError(f"--pairs {path!r} has no {col_b!r} column; its columns are "
                                 f"{', '.join(reader.columns)}: choose with --pair-columns A,B")
            for record in reader:
                b = record.extra.get(col_b)
                error = record.error
                if error is None and not isinstance(b, str):
                    kind = "missing" if b is None else type(b).__name__
                    error = f"{col_b!r} is {kind}, not a string"
                if error is not None:
                    raise ProbeError(f"--pairs {reader.where(record.line)}: {error}")
                pairs.append((record.text, b))
    except RecordsError as e:
        raise ProbeError(f"--pairs: {e}") from None
    if not pairs:
        raise ProbeError(f"--pairs {path!r} holds no pairs")
    return pairs


def run_pairs(clf: Classifier, pairs: Sequence[tuple[str, str]],
              columns: tuple[str, str] = ("a", "b"), label: str | None = None) -> PairsResult:
    """Classify both sides of every pair through the engine (one stream) and take ΔP."""
    labels = tuple(str(x) for x in clf.labels)
    label = pick_label(labels, label)
    scored = score(clf, [a for a, _ in pairs] + [b for _, b in pairs])
    a, b = scored[:len(pairs)], scored[len(pairs):]
    delta = np.array([x.scores[label] - y.scores[label] for x, y in zip(a, b, strict=True)])
    return PairsResult(columns, labels, label, tuple(a), tuple(b), delta)
