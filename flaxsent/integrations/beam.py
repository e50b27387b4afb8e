"""Apache Beam RunInference over flaxsent: `FlaxsentModelHandler` (install `flaxsent[beam]`).

    with beam.Pipeline() as p:
        (p | beam.io.ReadFromText("in.txt", coder=beam.coders.BytesCoder())
           | RunInference(FlaxsentModelHandler("./sst2-flax"))
           | beam.Map(lambda r: {"text": r.example, **r.inference}) | ...)

Each element is one text (str, or bytes decoded as UTF-8); each result a `PredictionResult`
whose `inference` is the record `flaxsent predict` writes for it: {'label', 'score'}, or
{'labels': [...]} with top_k, plus 'logits' on request. An element that is not text becomes an
error record ({..., 'error': why}) in its place, as with `predict --on-error skip`, and is
counted in the handler's metrics namespace. Keyed elements work through `KeyedModelHandler`.

The handler speaks Beam's handler interface through its public methods only
(`batch_elements_kwargs`, `share_model_across_processes`, `model_copies`, `update_model_path`,
`validate_inference_args`, `set_environment_vars`), so it runs on every Beam from the declared
floor: `ModelHandler.__init__` took no batching arguments before Beam 2.72. Where the running
Beam's `BatchElements` takes `max_batch_weight` (2.74 on), batches are also bounded by their
tokens, counted with the model's tokenizer, which fits the engine's token budgets.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

try:
    import apache_beam as beam
    from apache_beam.metrics import Metrics
    from apache_beam.ml.inference.base import ModelHandler, PredictionResult
except ImportError as err:  # the extra is optional: say how to get it
    raise ImportError("flaxsent.beam needs Apache Beam: pip install 'flaxsent[beam]'") from err

from flaxsent.core import checkpoint as ckpt
from flaxsent.core.classifier import Classifier, length_limit
from flaxsent.core.plan import (
    DEFAULT_MAX_BATCH_SIZE,
    ShapePlan,
    batch_budget,
    default_pack_length,
)
from flaxsent.core.tokenizer import TextTokenizer
from flaxsent.integrations.scoring import OPTIONS, RowScorer, as_text
from flaxsent.io.records import ERROR

METRICS_NAMESPACE = "BeamML_Flaxsent"
DEFAULT_WINDOW = 4096  # Classifier's default window, the most texts it batches together
_SIZING_MAX_LENGTH = 512  # DistilBERT's limit; sizing needs no model, so it assumes it
# A call's default token bound, in the engine's batches: enough of them for the host's
# tokenizing and packing to overlap the device, few enough that a call's work stays bounded
# whatever the texts' lengths.
CALL_BATCHES = 16
# Feature, not version: the Beam releases whose BatchElements bounds a batch's total weight.
WEIGHTED_BATCHING = "max_batch_weight" in inspect.signature(beam.BatchElements).parameters


class TokenCount:
    """Beam's `element_size_fn` for texts: an element's tokens, as the engine will run it.

    The tokenizer is loaded from the model folder on first use, on the worker (it is not
    pickled with the pipeline). A non-text element weighs 1: it rides along at no cost.
    """

    def __init__(self, model_path: str, max_length: int | None = None):
        self.model_path = model_path
        self.max_length = max_length
        self._tokenizer: TextTokenizer | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tokenizer": None}

    def __call__(self, element: Any) -> int:
        # Beam releases before 2.78 hand a KeyedModelHandler's (key, text) pairs over as they
        # are; a tuple is never a text, so its second item is the text
        if isinstance(element, tuple) and len(element) == 2:
            element = element[1]
        text, _ = as_text(element, "the element")
        if text is None:
            return 1
        if self._tokenizer is None:
            folder = ckpt.resolve_source(self.model_path)
            tokenizer = TextTokenizer.from_folder(folder)
            limit = length_limit(tokenizer, ckpt.read_config(folder))  # the Classifier's
            self._tokenizer = tokenizer.with_max_length(min(self.max_length or limit, limit))
        ids, _ = self._tokenizer.encode_batch([text])  # truncated, as the engine runs it
        return len(ids[0])


class FlaxsentModelHandler(ModelHandler[Any, PredictionResult, RowScorer]):
    """A Beam `ModelHandler` that scores texts with a flaxsent `Classifier`."""

    def __init__(self, model_path: str, *, top_k: int | None = 1,
                 function_to_apply: str | None = None, logits: bool = False,
                 platform: str = "cpu", share_model_across_processes: bool = True,
                 model_copies: int | None = None,
                 min_batch_size: int | None = None, max_batch_size: int | None = None,
                 max_batch_duration_secs: int | None = None,
                 max_batch_weight: int | None = None,
                 element_size_fn: Callable[[Any], int] | None = None,
                 env_vars: Mapping[str, str] | None = None, **classifier_options: Any):
        """`classifier_options` go to `Classifier.from_pretrained` on the worker (dtype,
        max_batch_tokens, devices as an int, ...). The batching arguments are Beam's own
        (elements per call; `max_batch_weight` in `element_size_fn`'s units, tokens by
        default); `platform` is the workers' JAX platform ('cpu', 'gpu', 'tpu'): Beam fixes
        its batch sizes when the pipeline is built, before any worker loads the model, so they
        are sized from that platform's batch budget. `model_copies`, as in Beam's handlers,
        loads that many classifiers per machine, shared by its processes; `env_vars` are set
        on the worker before the model loads (XLA_PYTHON_CLIENT_MEM_FRACTION, say)."""
        super().__init__()  # Beam's own arguments (2.72 on) are answered by the methods below
        if not WEIGHTED_BATCHING and (max_batch_weight is not None or element_size_fn):
            raise ValueError(f"max_batch_weight and element_size_fn need a Beam whose "
                             f"BatchElements takes max_batch_weight (2.74 or later); this is "
                             f"Beam {beam.__version__}")
        self._model_path = str(model_path)
        self._scoring = {"top_k": top_k, "function_to_apply": function_to_apply,
                         "logits": logits}
        self._platform = platform
        self._share = share_model_across_processes or model_copies is not None
        self._model_copies = model_copies
        self._given_batching = {name: value for name, value in (
            ("min_batch_size", min_batch_size), ("max_batch_size", max_batch_size),
            ("max_batch_duration_secs", max_batch_duration_secs),
            ("max_batch_weight", max_batch_weight), ("element_size_fn", element_size_fn),
        ) if value is not None}
        self._env_vars = dict(env_vars or {})
        self._classifier_options = classifier_options

    def load_model(self) -> RowScorer:
        """The classifier, loaded (and its compilation cache opened) once per worker."""
        clf = Classifier.from_pretrained(self._model_path, **self._classifier_options)
        return RowScorer(clf, **self._scoring)

    def run_inference(self, batch: Sequence[Any], model: RowScorer,
                      inference_args: dict[str, Any] | None = None,
                      ) -> Iterable[PredictionResult]:
        """One PredictionResult per element, in order (bad elements as error records);
        `inference_args` override top_k, function_to_apply and logits for this call."""
        # one call: `model` may be another process's
        records = model.score(list(batch), options=inference_args)
        errors = sum(ERROR in record for record in records)
        if errors:
            Metrics.counter(METRICS_NAMESPACE, "num_error_records").inc(errors)
        return [PredictionResult(example, record, self._model_path)
                for example, record in zip(batch, records, strict=True)]

    def validate_inference_args(self, inference_args: dict[str, Any] | None) -> None:
        """Accept the per-call options of `flaxsent predict` (top_k, function_to_apply,
        logits), refused when the pipeline is built if they name anything else."""
        unknown = sorted(set(inference_args or {}) - set(OPTIONS))
        if unknown:
            raise ValueError(f"FlaxsentModelHandler's inference_args are {', '.join(OPTIONS)}; "
                             f"got {', '.join(unknown)}")

    def update_model_path(self, model_path: str | None = None) -> None:
        """Score with the model at `model_path` from the next load on (Beam's model refresh
        through a side input); None keeps the current one."""
        self._model_path = str(model_path) if model_path else self._model_path

    def share_model_across_processes(self) -> bool:
        return self._share

    def model_copies(self) -> int:
        return self._model_copies or 1

    def set_environment_vars(self) -> None:
        """Set `env_vars` in the worker's environment (Beam calls this before loading)."""
        os.environ.update(self._env_vars)

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE

    def batch_elements_kwargs(self) -> Mapping[str, Any]:
        """Beam's batch sizes from the engine's: at least the texts one packed batch holds (so
        the engine's batches are full), at most the classifier's window (the most texts it
        batches together), and where Beam can, at most CALL_BATCHES engine batches' tokens;
        batch sizes given to the handler win."""
        options = self._classifier_options
        devices = options.get("devices")
        n_devices = devices if isinstance(devices, int) else len(devices or [None])
        max_length = min(options.get("max_length") or _SIZING_MAX_LENGTH, _SIZING_MAX_LENGTH)
        budget = options.get("max_batch_tokens") or batch_budget(self._platform, n_devices)
        pack_length = options.get("pack_length", "auto")
        if pack_length == "auto":  # as the Classifier the worker builds resolves it
            pack_length = default_pack_length(self._platform, options.get("quantize", "none"),
                                              options.get("dtype", "float32"))
        plan = ShapePlan.build(max_length, max_batch_tokens=budget, device_count=n_devices,
                               max_batch_size=DEFAULT_MAX_BATCH_SIZE,
                               pack_length=pack_length)
        first = plan.shapes()[0]
        window = options.get("window", DEFAULT_WINDOW)
        sized: dict[str, Any] = {"min_batch_size": min(first.rows * first.slots, window),
                                 "max_batch_size": window}
        if WEIGHTED_BATCHING:
            sized["max_batch_weight"] = CALL_BATCHES * budget
            sized["element_size_fn"] = TokenCount(self._model_path, options.get("max_length"))
        given = self._given_batching
        if "max_batch_size" in given:  # keep min <= max when only one bound is given
            sized["min_batch_size"] = min(sized["min_batch_size"], given["max_batch_size"])
        if "min_batch_size" in given:
            sized["max_batch_size"] = max(sized["max_batch_size"], given["min_batch_size"])
        return {**sized, **given}
