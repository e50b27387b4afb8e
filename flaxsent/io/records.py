"""The output record of one input, as every front end writes it: `flaxsent predict`, the Beam
and Ray handlers, and `flaxsent serve`.

A good row's prediction fields are the classifier's pipeline-style result: 'label' and 'score'
for top_k=1, else 'labels' (a list of {'label', 'score'}); then 'logits' (the raw row) when
asked. A bad row (an input that is not text) has the same keys set to None, then 'error' (with
'line' before it where the output says where rows came from). An input column named like an
output field is carried as `input_<name>`, so it never overwrites a prediction.

Nothing here knows the model: callers pass the already formatted result and the logits row.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

LABEL = "label"
SCORE = "score"
LABELS = "labels"
LOGITS = "logits"
LINE = "line"
ERROR = "error"
FIELDS = (LABEL, SCORE, LABELS, LOGITS, LINE, ERROR)  # every field a record may have


def prediction_fields(top_k: int | None, logits: bool) -> tuple[str, ...]:
    """The prediction keys of every record, in order ('line' and 'error' aside)."""
    return ((LABEL, SCORE) if top_k == 1 else (LABELS,)) + ((LOGITS,) if logits else ())


def good_row(result: Any, top_k: int | None, logits: Sequence[float] | None = None,
             ) -> dict[str, Any]:
    """The prediction fields of a scored input: `result` is the classifier's pipeline-style
    result (a dict for top_k=1, else a list of dicts); `logits` the input's logits row [C],
    given when the record carries it."""
    record = dict(result) if top_k == 1 else {LABELS: result}
    if logits is not None:
        record[LOGITS] = [float(v) for v in logits]
    return record


def bad_row(error: str | None, top_k: int | None, logits: bool, line: int | None = None,
            ) -> dict[str, Any]:
    """The record of an input that could not be scored: a good row's keys set to None, then
    `line` (where given) and `error`."""
    record: dict[str, Any] = dict.fromkeys(prediction_fields(top_k, logits))
    if line is not None:
        record[LINE] = line
    record[ERROR] = error
    return record


def input_name(column: str, taken: Collection[str] = FIELDS) -> str:
    """An input column's name in the output: `input_<name>` if the output has a field of that
    name (`taken`), else the name itself."""
    return f"input_{column}" if column in taken else column


def score_first(result: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A top_k=None result in text-embeddings-inference's form: each label's score first."""
    return [{SCORE: d[SCORE], LABEL: d[LABEL]} for d in result]
