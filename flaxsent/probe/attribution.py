"""`flaxsent probe --explain`: why a value moved the score. Each sentence is explained for the
probe's label (integrated gradients, flaxsent/core/attribution.py): the attribution of the
value's own tokens (every placeholder's, summed) and the words that moved the score most."""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Sequence
from typing import TYPE_CHECKING

from flaxsent.core.attribution import Explanation
from flaxsent.explain.run import explain_all
from flaxsent.probe.run import PairsResult, ProbeResult, Template

if TYPE_CHECKING:
    from flaxsent.core.classifier import Classifier

TOP_WORDS = 3


@dataclasses.dataclass(frozen=True)
class SentenceAttribution:
    """One sentence's attributions to the probe's label: its values' tokens (None where the
    values do not tokenize apart from their context), its top words, the convergence gap."""

    value: float | None
    top: tuple[tuple[str, float], ...]
    gap: float | None

    def as_dict(self) -> dict:
        return {"value_attribution": self.value, "top_words": [list(t) for t in self.top],
                "gap": self.gap}

    def top_text(self) -> str:
        """The top words as one cell: `awful -0.412; film +0.051`."""
        return "; ".join(f"{w} {v:+.3f}" for w, v in self.top)


def value_spans(clf: Classifier, template: Template, values: Sequence[str], ids: Sequence[int],
                ) -> list[tuple[int, int]] | None:
    """The token spans [start, end) of each placeholder's value in the filled sentence's `ids`
    ([CLS] at 0), from the tokens of the sentence's growing prefixes; None where the sentence's
    tokens do not start with a prefix's (a value glued to the text around it)."""
    named = dict(zip(template.placeholders, values, strict=True))
    prefixes, text = [], ""
    for literal, field, _, _ in string.Formatter().parse(template.text):
        text += literal
        if field is not None:
            prefixes += [text, text + named[field]]
            text += named[field]
    encoded, _ = clf.tokenizer.encode_batch(prefixes)
    content = [t[1:-1] for t in encoded]  # [CLS] and [SEP] off
    if any(list(ids[1:1 + len(c)]) != c for c in content):
        return None
    return [(1 + len(content[i]), 1 + len(content[i + 1])) for i in range(0, len(content), 2)]


def _of(e: Explanation, spans: list[tuple[int, int]] | None) -> SentenceAttribution:
    value = None if spans is None else float(sum(e.attributions[a:b].sum() for a, b in spans))
    return SentenceAttribution(value, tuple(e.top(TOP_WORDS)), e.gap)


def explain_probe(clf: Classifier, result: ProbeResult, steps: int = 50,
                  progress: bool = True) -> list[SentenceAttribution]:
    """Every sentence of a template probe explained for the probe's label, in sentence order."""
    plan = result.plan
    sentences = [f.sentence for f in plan.sentences]
    explained = explain_all(clf, sentences, target=result.label, steps=steps, progress=progress)
    ids, _ = clf.tokenizer.encode_batch(sentences)
    return [_of(e, value_spans(clf, plan.templates[f.template], f.values, full))
            for f, e, full in zip(plan.sentences, explained, ids, strict=True)]


def explain_pairs(clf: Classifier, result: PairsResult, steps: int = 50,
                  progress: bool = True) -> tuple[list[SentenceAttribution],
                                                  list[SentenceAttribution]]:
    """Both sentences of every pair explained for the probe's label: their top words."""
    sentences = [s.sentence for s in result.a] + [s.sentence for s in result.b]
    explained = explain_all(clf, sentences, target=result.label, steps=steps, progress=progress)
    rows = [_of(e, None) for e in explained]
    return rows[:len(result.a)], rows[len(result.a):]
