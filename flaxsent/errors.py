"""Every user-facing error of flaxsent, in one hierarchy: the CLI prints one as a single line
(exit 2), never a traceback. Errors that are not the user's (a failed device run, an internal
shortfall) are not FlaxsentErrors; the server's HTTP errors are `flaxsent.serve.http.ApiError`.
"""

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
        self.logits = list(map(float, logits))
        self.others = others  # other inputs of the rows checked with it that are non-finite too
        self.detail = (f"the model gave non-finite logits {self.logits}{also}; the "
                       "checkpoint is broken (NaN or inf weights?), no score is written")
        super().__init__(f"input {index}: {self.detail}")


class RecordsError(FlaxsentError, ValueError):
    """An input or output file that cannot be read or written as a whole (not a single bad row)."""


class WriteError(RecordsError):
    """An output that could not be written (a full disk, a lost mount): what was written before
    the failing chunk stays."""


class LabelledFileError(FlaxsentError):
    """A labelled file that cannot be used: a bad row, a missing or unknown label."""


class MetricsError(FlaxsentError, ValueError):
    """Labels or probabilities that cannot be scored (wrong shape, unknown label)."""


class PredictError(FlaxsentError):
    """A bad input row under --on-error fail, or options that cannot work together."""


class ShardError(FlaxsentError):
    """Process options that cannot work together, or parts that do not make one run."""


class TrainError(FlaxsentError):
    """Options, data or an output folder that a training run cannot use."""


class ProbeError(FlaxsentError, ValueError):
    """A probe that cannot run: a bad template, placeholder, value list, pairs file or label."""


class AotError(FlaxsentError):
    """A bad option of `flaxsent aot`."""


class TpuError(FlaxsentError):
    """An unknown topology, or no libtpu to describe one."""


class ExplainError(FlaxsentError, ValueError):
    """An explain run that cannot start: no texts, a bad input file or option, an occupied --out."""
