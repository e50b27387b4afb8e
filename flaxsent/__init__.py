"""flaxsent: a compiled, data-parallel JAX/Flax inference engine for DistilBERT classifiers."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public names, imported on first use so `import flaxsent` stays cheap (no jax start-up).
_LAZY = {
    "DistilBertConfig": "flaxsent.config",
    "DistilBertForSequenceClassification": "flaxsent.model",
    "load_model": "flaxsent.checkpoint",
    "Classifier": "flaxsent.classifier",
    "FlaxsentError": "flaxsent.errors",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'flaxsent' has no attribute {name!r}")
