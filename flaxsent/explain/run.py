"""The texts an explain run takes (arguments and a file) and the run itself, under a progress
bar."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from flaxsent.core.attribution import Explanation
from flaxsent.errors import ExplainError, RecordsError
from flaxsent.io.readers import read_records

if TYPE_CHECKING:
    from flaxsent.core.classifier import Classifier

def gather_texts(texts: Sequence[str], path: str | None, text_column: str | None = None,
                 ) -> list[str]:
    """The texts given as arguments, then those of `path` (txt, JSONL, CSV/TSV, Parquet)."""
    gathered = list(texts)
    if path is not None:
        try:
            with read_records(path, text_column=text_column) as reader:
                gathered += reader.texts()
        except RecordsError as e:
            raise ExplainError(f"--file: {e}") from None
    if not gathered:
        raise ExplainError("no text to explain: pass texts as arguments or --file FILE")
    return gathered


def explain_all(clf: Classifier, texts: Sequence[str], *, target: str | None = None,
                steps: int = 50, method: str = "integrated-gradients",
                progress: bool = True) -> list[Explanation]:
    """`clf.explain` of every text, with a bar on stderr (on a TTY) counting the interpolation
    copies computed (`steps` a text for integrated gradients, one for gradient-x-input)."""
    from tqdm import tqdm
    copies = len(texts) * (steps if method == "integrated-gradients" else 1)
    with tqdm(total=copies, unit="copy", unit_scale=True, dynamic_ncols=True, file=sys.stderr,
              disable=None if progress else True) as bar:
        return clf.explain(texts, target=target, steps=steps, method=method,
                           progress=bar.update)
