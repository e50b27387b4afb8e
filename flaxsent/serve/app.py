"""`flaxsent serve`: the model card's `/score` contract and TEI's routes over one engine.

Routes: POST /score (and POST / with that body): `{"input_data": [...], "parameters": {...}}` ->
what `Classifier.__call__` returns. GET /info, GET /health (and / and /ping), GET /metrics: Hugging
Face text-embeddings-inference's JSON shapes, status codes and `x-*-time` headers; TEI's predict,
/tokenize and /decode are in `tei`. Errors are `{"error", "error_type"}`. One `Batcher` owns the
devices; tokenizing runs in a thread pool. The front door (auth, limits, draining) and the
uvicorn server are in `http`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from flaxsent.core.classifier import Classifier
from flaxsent.errors import NonFiniteLogitsError
from flaxsent.io.readers import unicode_problem
from flaxsent.serve.batcher import Batcher, EngineError, RequestLogits
from flaxsent.serve.http import ApiError, DrainingServer, Gate, add_error_handlers, bind
from flaxsent.serve.metrics import CONTENT_TYPE, ServeMetrics
from flaxsent.serve.options import HOST, PORT, ServeOptions
from flaxsent.serve.tei import add_routes as add_tei_routes
from flaxsent.serve.tei import counted
from flaxsent.version import __version__

log = logging.getLogger("flaxsent")

# uvicorn waits this long for requests in flight after SIGTERM, then cancels them
DRAIN_TIMEOUT_S = 60
_TYPE_TAGS = {"str", "int", "bool", "float", "list", "dict"}  # pydantic's union-branch names


# ---- request bodies -------------------------------------------------------------------------

class ScoreParameters(BaseModel):
    """What `parameters` of /score may set; each means what it means for `Classifier`."""

    model_config = ConfigDict(extra="forbid")
    top_k: StrictInt | None = Field(1, ge=1)
    function_to_apply: Literal["softmax", "sigmoid", "none"] | None = None
    truncation: StrictBool = True


class ScoreRequest(BaseModel):
    """The model card's request: `{"input_data": ["text", ...]}` (or one string)."""

    model_config = ConfigDict(extra="forbid")
    input_data: list[StrictStr] | StrictStr
    parameters: ScoreParameters | None = None  # null or absent: the defaults


def describe_validation(errors: list[dict[str, Any]]) -> str:
    """One line for pydantic's errors: the deepest path, what was wrong, and what came."""
    if errors and errors[0].get("type") == "json_invalid":
        return f"the body is not valid JSON: {errors[0].get('ctx', {}).get('error', '')}".strip()
    if errors and tuple(errors[0]["loc"]) == ("body",) and isinstance(errors[0].get("input"),
                                                                     bytes):
        return "the body must be a JSON object sent with 'Content-Type: application/json'"

    def path(loc: tuple) -> list:
        return [p for p in loc[1 if loc and loc[0] == "body" else 0:]
                if not (isinstance(p, str) and (p in _TYPE_TAGS or "[" in p))]

    deepest = max((path(e["loc"]) for e in errors), key=len, default=[])
    chosen = [e for e in errors if path(e["loc"]) == deepest]  # a union's alternatives
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in deepest)
    messages = ", or ".join(dict.fromkeys(e["msg"] for e in chosen))
    got = "" if chosen[0]["type"] in ("missing", "extra_forbidden") else \
        f" (got {type(chosen[0].get('input')).__name__})"
    return f"{where.lstrip('.') or 'body'}: {messages}{got}"


def check_unicode(texts: list[str], name: Callable[[int], str]) -> None:
    """422 `tokenizer` for a text that is not valid Unicode (a lone UTF-16 surrogate, which JSON
    can carry and the tokenizer cannot take)."""
    for i, text in enumerate(texts):
        problem = unicode_problem(text)
        if problem is not None:
            raise ApiError("tokenizer", f"{name(i)}: {problem}; send valid Unicode text")


# ---- the service the routes share -----------------------------------------------------------

class Service:
    """The classifier, its batcher, the limits, the metrics and the server's state."""

    def __init__(self, clf: Classifier, opts: ServeOptions):
        self.clf = clf
        self.opts = opts
        self.in_flight = 0  # inference requests admitted and not yet answered (event loop only)
        self.draining = False
        self.metrics = ServeMetrics(queued=lambda: self.batcher.queued,
                                    in_flight=lambda: self.in_flight,
                                    compiled_shapes=lambda: len(clf.compiled_shapes),
                                    ready=lambda: float(self.batcher.ready),
                                    max_input_length=clf.tokenizer.max_length)
        self.batcher = Batcher(clf, opts.max_wait_ms / 1000, on_batch=self.metrics.observe_batch)
        self._pool = ThreadPoolExecutor(opts.tokenization_workers,
                                        thread_name_prefix="flaxsent-tokenize")

    def start(self) -> None:
        """Start the engine thread (it warms up every shape, then serves)."""
        self.batcher.start()

    def drain(self) -> None:
        """Answer new work with 503 and dispatch what is queued without waiting for more."""
        if not self.draining:
            log.info("flaxsent serve: draining: new requests get 503; finishing %d in flight",
                     self.in_flight)
        self.draining = True
        self.batcher.hurry()

    def close(self) -> None:
        """Finish queued requests and stop the engine thread and the tokenizer pool."""
        self.batcher.close()
        self._pool.shutdown(wait=True)

    def unavailable(self) -> ApiError | None:
        """Why requests cannot be served now (503), or None."""
        if self.draining:
            return ApiError("unhealthy", "the server is shutting down")
        if self.batcher.warmup_error:
            return ApiError("unhealthy", self.batcher.warmup_error)
        if not self.batcher.ready:
            return ApiError("unhealthy", "the model is warming up (compiling its shapes)")
        return None

    def check_count(self, n: int, field: str) -> None:
        """400 for an empty batch; 422 for more inputs than --max-client-batch-size."""
        if n == 0:
            raise ApiError("empty", f"{field}: the batch is empty")
        if n > self.opts.max_client_batch_size:
            raise ApiError("validation", f"{field}: batch size {n} > maximum allowed batch size "
                           f"{self.opts.max_client_batch_size}", failure="batch_size")

    async def infer(self, texts: list[str], truncation: bool, name: Callable[[int], str],
                    started: float) -> tuple[np.ndarray, dict[str, str]]:
        """Logits [n, C] of the texts, in order, and the response's timing headers."""
        check_unicode(texts, name)
        loop = asyncio.get_running_loop()
        ids, lengths = await loop.run_in_executor(self._pool, self.clf.tokenizer.encode_batch,
                                                  texts)
        tokenized = time.perf_counter()
        limit = self.clf.tokenizer.max_length
        over = np.flatnonzero(lengths > limit)
        if over.size and not truncation:
            i = int(over[0])
            raise ApiError("validation", f"{name(i)} is {int(lengths[i])} tokens long, over the "
                           f"model's limit of {limit}; shorten it or turn truncation on",
                           failure="tokenization")
        self.metrics.observe_inputs(np.minimum(lengths, limit), int(over.size))
        try:
            scored: RequestLogits = await asyncio.wrap_future(self.batcher.submit(ids))
        except EngineError as e:
            raise ApiError("backend", f"inference failed: {e}") from None
        except NonFiniteLogitsError as e:
            raise ApiError("backend", f"{name(e.index)}: the model gave a non-finite score "
                           f"(logits {e.logits}); {e.others + 1} input(s) affected") from None
        except RuntimeError as e:  # closed while this request was tokenized
            raise ApiError("unhealthy", f"the server is shutting down ({e})") from None
        logits = scored.logits  # [n, C]
        if logits.shape[0] != len(texts):  # never fewer (or more) results than inputs
            raise ApiError("backend", f"the engine returned {logits.shape[0]} result(s) for "
                           f"{len(texts)} input(s)")
        total_s = time.perf_counter() - started
        self.metrics.observe_request(tokenized - started, scored.queue_s, scored.inference_s,
                                     total_s)
        total_ms = str(int(total_s * 1000))
        headers = {
            "x-compute-type": self.clf.engine.devices[0].platform,
            "x-compute-time": total_ms, "x-total-time": total_ms,
            "x-compute-characters": str(sum(map(len, texts))),
            "x-compute-tokens": str(int(np.minimum(lengths, limit).sum())),
            "x-tokenization-time": str(int((tokenized - started) * 1000)),
            "x-queue-time": str(int(scored.queue_s * 1000)),
            "x-inference-time": str(int(scored.inference_s * 1000)),
            "x-batch-inputs": str(scored.batch_texts),  # inputs of every request run with it
        }
        return logits, headers

    def info(self) -> dict[str, Any]:
        """TEI's /info fields, plus flaxsent's batching details."""
        clf = self.clf
        labels = {str(i): name for i, name in enumerate(clf.labels)}
        shapes = clf.shapes()
        return {
            "model_id": self.opts.model_id, "model_sha": None,
            "model_dtype": clf.dtype, "quantize": clf.quantize, "runtime": clf.runtime,
            "served_model_name": self.opts.model_id,
            "model_type": {"classifier": {"id2label": labels,
                                          "label2id": {v: int(k) for k, v in labels.items()}}},
            "max_concurrent_requests": self.opts.max_concurrent_requests,
            "max_input_length": clf.tokenizer.max_length,
            "max_batch_tokens": max(rows * length for rows, length, _ in shapes),
            "max_batch_requests": None,
            "max_client_batch_size": self.opts.max_client_batch_size,
            "auto_truncate": True,
            "tokenization_workers": self.opts.tokenization_workers,
            "version": __version__, "sha": None, "docker_label": None,
            "max_wait_ms": self.opts.max_wait_ms,
            "devices": [str(d) for d in clf.engine.devices],
            "shapes": [list(s) for s in shapes],
        }


def create_app(clf: Classifier, opts: ServeOptions) -> FastAPI:
    """The FastAPI app: routes, error handlers, and the gate (auth, limits, draining)."""
    service = Service(clf, opts)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        service.start()
        try:
            yield
        finally:
            await asyncio.to_thread(service.close)

    app = FastAPI(title="flaxsent", version=__version__, lifespan=lifespan, docs_url="/docs",
                  redoc_url=None)
    app.state.service = service

    add_error_handlers(app)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return ApiError("validation", describe_validation(list(exc.errors()))).response()

    async def score(body: ScoreRequest) -> JSONResponse:
        """The model card's contract: one result per input, as `Classifier.__call__` gives."""
        started = time.perf_counter()
        single = isinstance(body.input_data, str)
        texts = [body.input_data] if single else body.input_data
        p = body.parameters or ScoreParameters()
        with counted(service.metrics, single):
            service.check_count(len(texts), "input_data")
            logits, headers = await service.infer(
                texts, p.truncation, lambda i: "input_data" if single else f"input_data[{i}]",
                started)
        results = [clf.format_scores(row, p.top_k, p.function_to_apply) for row in logits]
        # as the pipeline: one text with several labels asked for gives that text's list
        return JSONResponse(results[0] if single and p.top_k != 1 else results,
                            headers=headers)

    app.post("/score")(score)
    add_tei_routes(app, service, card=score, card_body=ScoreRequest)

    @app.get("/info")
    async def info() -> JSONResponse:
        """TEI's model and router description."""
        return JSONResponse(service.info())

    @app.get("/", include_in_schema=False)  # TEI's health check at / and /ping (SageMaker's)
    @app.get("/ping", include_in_schema=False)
    @app.get("/health")
    async def health() -> Response:
        """200 once every shape is compiled; 503 while warming up or draining."""
        error = service.unavailable()
        if error is not None:
            raise error
        return Response(status_code=200)

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text exposition."""
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    app.add_middleware(Gate, service=service, api_key=opts.api_key,
                       max_concurrent_requests=opts.max_concurrent_requests,
                       payload_limit=opts.payload_limit, body_timeout_s=opts.body_timeout_s)
    return app


def run_server(model: str, opts: ServeOptions, *, host: str = HOST, port: int = PORT,
               access_log: bool = False, **classifier_options: Any) -> int:
    """Load the model, listen, warm up, and serve until SIGTERM or SIGINT; 0 after draining.

    classifier_options go to `Classifier.from_pretrained` (dtype, max_batch_tokens, ...).
    """
    clf = Classifier.from_pretrained(model, **classifier_options)
    sock = bind(host, port)
    app = create_app(clf, opts)
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["loggers"]["flaxsent"] = {"handlers": ["default"], "level": "INFO",
                                         "propagate": False}
    config = uvicorn.Config(app, log_config=log_config, access_log=access_log, lifespan="on",
                            timeout_graceful_shutdown=DRAIN_TIMEOUT_S)
    server = DrainingServer(config, on_drain=app.state.service.drain)
    address, bound = sock.getsockname()[:2]
    url = f"http://{f'[{address}]' if ':' in address else address}:{bound}"
    log.info("flaxsent serve: listening on %s (%s; %s)", url, model,
             "API key required" if opts.api_key else "no API key")
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0
