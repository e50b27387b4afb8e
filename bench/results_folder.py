"""Where a benchmark writes its reports, and writing a record as JSON beside its Markdown."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from flaxsent.io import durable


def results_folder(out: str | os.PathLike | None, prefix: str = "") -> Path:
    """`out`, else bench/results/<prefix><UTC time> (not created here)."""
    if out:
        return Path(out).expanduser()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path("bench") / "results" / f"{prefix}{stamp}"


def write_record(folder: Path, stem: str, record: dict[str, Any], markdown: str) -> None:
    """`<stem>.json` (the record, indented) and `<stem>.md` in `folder`, each written whole
    (`flaxsent.io.durable`): a killed bench never leaves a torn report."""
    durable.write_text(folder / f"{stem}.json", json.dumps(record, indent=2) + "\n")
    durable.write_text(folder / f"{stem}.md", markdown.rstrip("\n") + "\n")
