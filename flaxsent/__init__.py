"""flaxsent: a compiled, data-parallel JAX/Flax inference engine for DistilBERT classifiers."""

from __future__ import annotations

import importlib
from typing import Any

from flaxsent.version import __version__

# Public names, imported on first use so `import flaxsent` stays cheap (no jax start-up).
_LAZY = {
    "DistilBertConfig": "flaxsent.core.config",
    "DistilBertForSequenceClassification": "flaxsent.core.model",
    "load_model": "flaxsent.core.checkpoint",
    "Classifier": "flaxsent.core.classifier",
    "FlaxsentError": "flaxsent.errors",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'flaxsent' has no attribute {name!r}")
