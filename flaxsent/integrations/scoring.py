"""Scoring Python values in batches for the scale-out engines (Beam, Ray): one record per value.

Values arrive from someone else's reader (a Beam PCollection, a Ray Data column), so any of them
may be unusable as text: None, a number, bytes that are not UTF-8. Like `flaxsent predict
--on-error skip`, such a value becomes an error record in its place instead of failing the
whole batch; the classifier holds its place (`stream_logits` takes None), so every value comes
back exactly once, in order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from flaxsent.core.classifier import Classifier
from flaxsent.errors import FlaxsentError
from flaxsent.io import records

# the options of one call, as `flaxsent predict` takes them (a handler's defaults, per-call
# overrides: Beam's inference_args)
OPTIONS = ("top_k", "function_to_apply", "logits")


def as_text(value: Any, name: str) -> tuple[str | None, str | None]:
    """(text, None) for a str or UTF-8 bytes, else (None, why not), naming the value `name`."""
    if isinstance(value, str):
        return str(value), None  # numpy's str_ and other subclasses as plain str
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8"), None
        except UnicodeDecodeError as err:
            return None, (f"{name} is not valid UTF-8 (byte {err.start + 1}: "
                          f"{bytes(value[err.start:err.start + 4])!r}); re-encode it as UTF-8")
    if value is None or (isinstance(value, float) and math.isnan(value)) \
            or type(value).__name__ == "NAType":  # pandas.NA, without importing pandas
        return None, f"{name} is missing (null)"
    return None, f"{name} is {type(value).__name__}, not a string"


class RowScorer:
    """A `Classifier` that turns a batch of values into `flaxsent predict`'s output records.

    A good value gives {'label', 'score'} (top_k=1) or {'labels': [...]} (otherwise), plus
    'logits' when asked; a bad one gives the same keys set to None plus 'error' (see
    `flaxsent.io.records`).
    """

    def __init__(self, classifier: Classifier, *, top_k: int | None = 1,
                 function_to_apply: str | None = None, logits: bool = False):
        try:  # refuse a bad top_k or function now, not on the first batch
            classifier.format_scores(np.zeros(classifier.config.num_labels, np.float32),
                                     top_k=top_k, function_to_apply=function_to_apply)
        except ValueError as err:
            raise FlaxsentError(str(err)) from None
        if not isinstance(logits, bool):
            raise FlaxsentError(f"logits must be True or False, got {logits!r}")
        self.classifier = classifier
        self.top_k = top_k
        self.function_to_apply = function_to_apply
        self.logits = logits

    @property
    def fields(self) -> tuple[str, ...]:
        """The prediction keys of every record, 'error' aside."""
        return records.prediction_fields(self.top_k, self.logits)

    def with_options(self, options: Mapping[str, Any]) -> RowScorer:
        """This scorer with some of its `OPTIONS` replaced (checked as at construction)."""
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise FlaxsentError(f"unknown option(s) {', '.join(unknown)}: the options are "
                                f"{', '.join(OPTIONS)}")
        current = {"top_k": self.top_k, "function_to_apply": self.function_to_apply,
                   "logits": self.logits}
        return RowScorer(self.classifier, **{**current, **options})

    def score(self, values: Sequence[Any], name: str = "the element",
              options: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """One record per value, in order; `name` says what a value is in error messages, and
        `options` replace this scorer's for this call only."""
        if options:
            return self.with_options(options).score(values, name)
        checked = [as_text(value, name) for value in values]
        rows = self.classifier.stream_logits(text for text, _ in checked)
        return [self._bad(error) if row is None else self._good(row)
                for row, (_, error) in zip(rows, checked, strict=True)]

    def _good(self, logits: np.ndarray) -> dict[str, Any]:
        result = self.classifier.format_scores(logits, top_k=self.top_k,
                                               function_to_apply=self.function_to_apply)
        return records.good_row(result, self.top_k, logits if self.logits else None)

    def _bad(self, error: str) -> dict[str, Any]:
        return records.bad_row(error, self.top_k, self.logits)
