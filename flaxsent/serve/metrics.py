"""The server's Prometheus metrics, in a registry of its own (so several apps can coexist):
flaxsent's own (`flaxsent_*`) and text-embeddings-inference's (`te_*`, as TEI's router names,
labels and buckets them, so TEI's dashboards and alerts work unchanged)."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterator

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric

from flaxsent.core.plan import Batch

# seconds: 0.1 ms to about 60 s, x1.5 apart (TEI's duration buckets start lower, at 10 us)
DURATION_BUCKETS = tuple(1e-4 * 1.5 ** i for i in range(33))
COUNT_BUCKETS = tuple(float(2 ** i) for i in range(13))  # texts: 1 .. 4096
TOKEN_BUCKETS = tuple(float(2 ** i) for i in range(4, 21))  # tokens: 16 .. 1M
# TEI's buckets (router/src/prometheus.rs): seconds 15 us .. ~15 s, x1.5 apart; tokens 1 .. 1M
TEI_DURATION_BUCKETS = tuple(1e-5 * 1.5 ** i for i in range(1, 36))
TEI_TOKEN_BUCKETS = tuple(float(2 ** i) for i in range(21))
CONTENT_TYPE = CONTENT_TYPE_LATEST


class TeiCounter:
    """A count per value of one label, exported under TEI's exact sample name.

    prometheus_client names every counter's samples `NAME_total`, while TEI's exporter writes
    `te_request_count{method="single"} 3`: these are exported untyped, so a dashboard's
    `rate(te_request_count[5m])` finds the same series as on TEI."""

    def __init__(self, name: str, documentation: str, label: str,
                 registry: CollectorRegistry):
        self.name, self.documentation, self.label = name, documentation, label
        self._counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        registry.register(self)

    def inc(self, value: str) -> None:
        """Count one more under label=value."""
        with self._lock:
            self._counts[value] += 1

    def collect(self) -> Iterator[Metric]:
        """The samples seen so far (as in TEI, a value appears once counted)."""
        metric = Metric(self.name, self.documentation, "unknown")
        with self._lock:
            for value, count in sorted(self._counts.items()):
                metric.add_sample(self.name, {self.label: value}, float(count))
        yield metric


class ServeMetrics:
    """Requests, their time in tokenizing, queue and inference, and the device batches."""

    def __init__(self, queued: Callable[[], float], in_flight: Callable[[], float],
                 compiled_shapes: Callable[[], float], ready: Callable[[], float],
                 max_input_length: int = 512):
        """The callables are read at each scrape: requests queued for the engine, requests
        being served, shapes compiled so far, and 1/0 for ready. max_input_length bounds
        te_request_input_length's buckets, as in TEI."""
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("flaxsent_requests", "HTTP requests answered, by route and "
                                "status code", ["route", "status"], registry=r)
        self.disconnects = Counter("flaxsent_client_disconnects", "Requests whose client left "
                                   "before its body was complete (nothing answered), by route",
                                   ["route"], registry=r)
        self.inputs = Counter("flaxsent_inputs", "Texts received by the inference routes",
                              registry=r)
        self.truncated = Counter("flaxsent_truncated_inputs",
                                 "Texts cut to the model's maximum length", registry=r)
        self.request_duration = Histogram("flaxsent_request_duration_seconds",
                                          "Time from request to response, by route", ["route"],
                                          buckets=DURATION_BUCKETS, registry=r)
        self.tokenization = Histogram("flaxsent_tokenization_duration_seconds",
                                      "Time tokenizing a request's texts",
                                      buckets=DURATION_BUCKETS, registry=r)
        self.queue = Histogram("flaxsent_queue_duration_seconds",
                               "Time a request waited for its device batch",
                               buckets=DURATION_BUCKETS, registry=r)
        self.inference = Histogram("flaxsent_inference_duration_seconds",
                                   "Time from a request's dispatch to its logits on the host",
                                   buckets=DURATION_BUCKETS, registry=r)
        self.batch_size = Histogram("flaxsent_batch_size", "Texts in a device batch",
                                    buckets=COUNT_BUCKETS, registry=r)
        self.batch_tokens = Histogram("flaxsent_batch_tokens", "Real tokens in a device batch",
                                      buckets=TOKEN_BUCKETS, registry=r)
        self.computed_tokens = Counter("flaxsent_computed_tokens",
                                       "Tokens the device computed, padding included",
                                       registry=r)
        for name, doc, read in (
                ("flaxsent_queue_size", "Requests waiting for the engine", queued),
                ("flaxsent_requests_in_flight", "Inference requests being served", in_flight),
                ("flaxsent_compiled_shapes", "Batch shapes compiled so far", compiled_shapes),
                ("flaxsent_ready", "1 once every shape is compiled, else 0", ready)):
            Gauge(name, doc, registry=r).set_function(read)
        self._tei(queued, max_input_length)

    def _tei(self, queued: Callable[[], float], max_input_length: int) -> None:
        """TEI's metrics: the names, labels and buckets of TEI's router and queue."""
        r = self.registry
        self.te_count = TeiCounter("te_request_count", "Inference requests received, by "
                                   "method (single: one input, batch: a list)", "method", r)
        self.te_success = TeiCounter("te_request_success", "Inference requests answered, by "
                                     "method", "method", r)
        self.te_failure = TeiCounter("te_request_failure", "Failed inference requests, by "
                                     "TEI's err label", "err", r)

        def seconds(name: str, doc: str) -> Histogram:
            return Histogram(name, doc, buckets=TEI_DURATION_BUCKETS, registry=r)

        self.te_duration = seconds("te_request_duration", "Time to answer a request")
        self.te_tokenization = seconds("te_request_tokenization_duration",
                                       "Time tokenizing a request's inputs")
        self.te_queue = seconds("te_request_queue_duration",
                                "Time a request waited for its device batch")
        self.te_inference = seconds("te_request_inference_duration",
                                    "Time from a request's dispatch to its scores")
        self.te_input_length = Histogram(
            "te_request_input_length", "Tokens of each input, after truncation",
            buckets=tuple(b for b in TEI_TOKEN_BUCKETS if b <= max_input_length), registry=r)
        self.te_batch_size = Histogram("te_batch_next_size", "Inputs in a device batch",
                                       buckets=COUNT_BUCKETS, registry=r)
        self.te_batch_tokens = Histogram("te_batch_next_tokens", "Real tokens in a device batch",
                                         buckets=TEI_TOKEN_BUCKETS, registry=r)
        Gauge("te_queue_size", "Requests waiting for the engine", registry=r
              ).set_function(queued)

    def observe_inputs(self, lengths: np.ndarray, truncated: int) -> None:
        """A request's inputs, tokenized: their lengths as run [n], and how many were cut."""
        self.inputs.inc(len(lengths))
        self.truncated.inc(truncated)
        for length in lengths.tolist():
            self.te_input_length.observe(length)

    def observe_request(self, tokenization_s: float, queue_s: float, inference_s: float,
                        total_s: float) -> None:
        """Where an answered request's time went."""
        for ours, teis, seconds in ((self.tokenization, self.te_tokenization, tokenization_s),
                                    (self.queue, self.te_queue, queue_s),
                                    (self.inference, self.te_inference, inference_s)):
            ours.observe(seconds)
            teis.observe(seconds)
        self.te_duration.observe(total_s)

    def observe_batch(self, batch: Batch) -> None:
        """One device batch read back (called on the engine thread)."""
        for size, tokens in ((self.batch_size, self.batch_tokens),
                             (self.te_batch_size, self.te_batch_tokens)):
            size.observe(batch.n_real)
            tokens.observe(batch.real_tokens)
        self.computed_tokens.inc(batch.computed_tokens)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
