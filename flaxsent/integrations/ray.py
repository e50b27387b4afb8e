"""Ray Data over flaxsent: `FlaxsentPredictor` for `Dataset.map_batches` (install `flaxsent[ray]`).

    ds = ray.data.read_parquet("in/")
    ds = ds.map_batches(FlaxsentPredictor, fn_constructor_kwargs={"model_path": "./sst2-flax"},
                        compute=ray.data.ActorPoolStrategy(size=2), batch_size=4096,
                        batch_format="pandas")
    ds.write_parquet("out/")

Each actor loads the classifier once; each call takes a pandas or numpy batch with a text
column and returns it with the columns `flaxsent predict` writes added: `label` and `score`, or
`labels` (each row's list of {label, score}) with top_k, plus `logits` on request, and `error`
(an input column of one of those names is kept as `input_<name>`, as `flaxsent predict` does).
A row whose text is not text (null, a number, bytes that are not UTF-8) gets null predictions
and its reason in `error` ('' for good rows), as with `predict --on-error skip`.

Nothing here imports Ray: the module works on the batches Ray hands it. (Its name does not
shadow the real package: imports are absolute, so `import ray` anywhere means Ray itself.)
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from flaxsent.core.classifier import Classifier
from flaxsent.errors import FlaxsentError
from flaxsent.integrations.scoring import RowScorer
from flaxsent.io import records


class FlaxsentPredictor:
    """A callable class for `ray.data.Dataset.map_batches`: text column in, label/score out."""

    def __init__(self, model_path: str, text_column: str = "text", *, top_k: int | None = 1,
                 function_to_apply: str | None = None, logits: bool = False,
                 **classifier_options: Any):
        """Load the classifier (once per actor); top_k, function_to_apply and logits as in
        `flaxsent predict`; `classifier_options` go to `Classifier.from_pretrained` (dtype,
        max_batch_tokens, devices, ...)."""
        clf = Classifier.from_pretrained(model_path, **classifier_options)
        self.scorer = RowScorer(clf, top_k=top_k, function_to_apply=function_to_apply,
                                logits=logits)
        self.text_column = text_column
        self.columns = (*self.scorer.fields, records.ERROR)  # the columns each batch gains

    def __call__(self, batch: Any) -> Any:
        """The batch (pandas DataFrame or dict of numpy arrays) with the prediction columns."""
        pd = sys.modules.get("pandas")  # a DataFrame batch means pandas is imported
        is_frame = pd is not None and isinstance(batch, pd.DataFrame)
        if not (is_frame or isinstance(batch, dict)):
            raise FlaxsentError(f"FlaxsentPredictor takes pandas or numpy batches, got a "
                                f"{type(batch).__name__}: pass batch_format='pandas' or 'numpy'")
        columns = list(batch.columns) if is_frame else list(batch)
        if self.text_column not in columns:
            raise FlaxsentError(f"the batch has no {self.text_column!r} column; its columns "
                                f"are {', '.join(map(repr, columns)) or '(none)'}: pass "
                                "text_column= to FlaxsentPredictor")
        scored = self.scorer.score(list(batch[self.text_column]), repr(self.text_column))
        renamed = {c: records.input_name(c, self.columns) for c in columns}
        added = {records.ERROR: [r.get(records.ERROR, "") for r in scored]}
        for field in self.scorer.fields:
            added[field] = [r[field] for r in scored]
        if records.SCORE in added:
            added[records.SCORE] = np.array([np.nan if v is None else v
                                             for v in added[records.SCORE]])
        if not is_frame:
            out = {renamed[c]: batch[c] for c in columns}
            for field in self.columns:
                out[field] = added[field] if field == records.SCORE else _objects(added[field])
            return out
        # explicit string dtypes: a batch of only bad rows still gives string columns
        for field in (records.LABEL, records.ERROR):
            if field in added:
                added[field] = pd.array(added[field], dtype="string")
        return batch.rename(columns=renamed).assign(**{f: added[f] for f in self.columns})


def _objects(values: list[Any]) -> np.ndarray:
    """A 1-D object array of `values` as they are (lists stay whole, one per row)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out
