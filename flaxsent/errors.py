"""User-facing error types: the CLI prints these as one line, never as a traceback."""

from collections.abc import Sequence


class FlaxsentError(Exception):
    """Base class of every error a user can cause (bad path, bad file, bad option)."""


class ConfigError(FlaxsentError, ValueError):
    """A config.json that is not a DistilBERT config flaxsent can run."""


class CheckpointError(FlaxsentError):
    """A checkpoint folder, Hub id or weight file that cannot be read or converted."""


class NonFiniteLogitsError(FlaxsentError):
    """The model gave NaN or inf for an input: a broken checkpoint, never a score to write."""

    def __init__(self, index: int, logits: Sequence[float], others: int = 0):
        also = f" (and for {others} other input(s) of its batch)" if others else ""
        self.index = index  # the input's position in the stream, 0-based
        self.detail = (f"the model gave non-finite logits {list(map(float, logits))}{also}; the "
                       "checkpoint is broken (NaN or inf weights?), no score is written")
        super().__init__(f"input {index}: {self.detail}")
