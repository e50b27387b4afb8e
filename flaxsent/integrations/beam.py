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

The classifier is loaded once per worker and, by default, shared by the worker's processes
(Beam's `share_model_across_processes`): one process holds the GPU or TPU, the others send it
their batches. Beam's batches never change the compiled shapes (the engine pads to its plan).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

try:
    from apache_beam.metrics import Metrics
    from apache_beam.ml.inference.base import ModelHandler, PredictionResult
except ImportError as err:  # the extra is optional: say how to get it
    raise ImportError("flaxsent.beam needs Apache Beam: pip install 'flaxsent[beam]'") from err

from flaxsent.core.classifier import Classifier
from flaxsent.core.plan import DEFAULT_MAX_BATCH_SIZE, DEFAULT_PACK_LENGTH, ShapePlan, batch_budget
from flaxsent.integrations.scoring import RowScorer
from flaxsent.io.records import ERROR

METRICS_NAMESPACE = "BeamML_Flaxsent"
DEFAULT_WINDOW = 4096  # Classifier's default window, the most texts it batches together
_SIZING_MAX_LENGTH = 512  # DistilBERT's limit; sizing needs no model, so it assumes it


class FlaxsentModelHandler(ModelHandler[Any, PredictionResult, RowScorer]):
    """A Beam `ModelHandler` that scores texts with a flaxsent `Classifier`."""

    def __init__(self, model_path: str, *, top_k: int | None = 1,
                 function_to_apply: str | None = None, logits: bool = False,
                 platform: str = "cpu", share_model_across_processes: bool = True,
                 min_batch_size: int | None = None, max_batch_size: int | None = None,
                 max_batch_duration_secs: int | None = None, **classifier_options: Any):
        """`classifier_options` go to `Classifier.from_pretrained` on the worker (dtype,
        max_batch_tokens, devices as an int, ...); `min_batch_size` and `max_batch_size` are
        Beam's (elements per call), so the engine keeps its own rows-per-batch cap. `platform`
        is the workers' JAX platform ('cpu', 'gpu', 'tpu'): Beam fixes its batch sizes when
        the pipeline is built, before any worker loads the model, so they are sized from that
        platform's batch budget."""
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size,
                         max_batch_duration_secs=max_batch_duration_secs)
        self._model_path = str(model_path)
        self._scoring = {"top_k": top_k, "function_to_apply": function_to_apply,
                         "logits": logits}
        self._platform = platform
        self._share_across_processes = share_model_across_processes
        self._classifier_options = classifier_options

    def load_model(self) -> RowScorer:
        """The classifier, loaded (and its compilation cache opened) once per worker."""
        clf = Classifier.from_pretrained(self._model_path, **self._classifier_options)
        return RowScorer(clf, **self._scoring)

    def run_inference(self, batch: Sequence[Any], model: RowScorer,
                      inference_args: dict[str, Any] | None = None,
                      ) -> Iterable[PredictionResult]:
        """One PredictionResult per element, in order (bad elements as error records)."""
        records = model.score(list(batch))  # one call: `model` may be another process's
        errors = sum(ERROR in record for record in records)
        if errors:
            Metrics.counter(METRICS_NAMESPACE, "num_error_records").inc(errors)
        return [PredictionResult(example, record, self._model_path)
                for example, record in zip(batch, records, strict=True)]

    def validate_inference_args(self, inference_args: dict[str, Any] | None) -> None:
        """Refuse per-call arguments: top_k and the like are the handler's own options."""
        if inference_args:
            raise ValueError(f"FlaxsentModelHandler takes no inference_args (got "
                             f"{sorted(inference_args)}): pass top_k, function_to_apply or "
                             "logits to the handler instead")

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE

    def batch_elements_kwargs(self) -> Mapping[str, Any]:
        """Beam's batch sizes from the engine's: at least the texts one packed batch holds (so
        the engine's batches are full), at most the classifier's window (the most texts it
        batches together); batch sizes given to the handler win."""
        options = self._classifier_options
        devices = options.get("devices")
        n_devices = devices if isinstance(devices, int) else len(devices or [None])
        plan = ShapePlan.build(
            min(options.get("max_length") or _SIZING_MAX_LENGTH, _SIZING_MAX_LENGTH),
            max_batch_tokens=options.get("max_batch_tokens")
            or batch_budget(self._platform, n_devices),
            device_count=n_devices,
            max_batch_size=DEFAULT_MAX_BATCH_SIZE,
            pack_length=options.get("pack_length", DEFAULT_PACK_LENGTH))
        first = plan.shapes()[0]
        window = options.get("window", DEFAULT_WINDOW)
        sized = {"min_batch_size": min(first.rows * first.slots, window),
                 "max_batch_size": window}
        given = dict(self._batching_kwargs)
        if "max_batch_size" in given:  # keep min <= max when only one bound is given
            sized["min_batch_size"] = min(sized["min_batch_size"], given["max_batch_size"])
        if "min_batch_size" in given:
            sized["max_batch_size"] = max(sized["max_batch_size"], given["min_batch_size"])
        return {**sized, **given}
