"""The server's Prometheus metrics, in a registry of its own (so several apps can coexist)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from flaxsent.core.plan import Batch

# seconds: 0.1 ms to about 60 s, x1.5 apart (TEI's duration buckets start lower, at 10 us)
DURATION_BUCKETS = tuple(1e-4 * 1.5 ** i for i in range(33))
COUNT_BUCKETS = tuple(float(2 ** i) for i in range(13))  # texts: 1 .. 4096
TOKEN_BUCKETS = tuple(float(2 ** i) for i in range(4, 21))  # tokens: 16 .. 1M
CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServeMetrics:
    """Requests, their time in tokenizing, queue and inference, and the device batches."""

    def __init__(self, queued: Callable[[], float], in_flight: Callable[[], float],
                 compiled_shapes: Callable[[], float], ready: Callable[[], float]):
        """The callables are read at each scrape: requests queued for the engine, requests
        being served, shapes compiled so far, and 1/0 for ready."""
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

    def observe_batch(self, batch: Batch) -> None:
        """One device batch read back (called on the engine thread)."""
        self.batch_size.observe(batch.n_real)
        self.batch_tokens.observe(batch.real_tokens)
        self.computed_tokens.inc(batch.computed_tokens)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
