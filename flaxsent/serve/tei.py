"""Hugging Face text-embeddings-inference's API for a classifier, as TEI's router serves it
(`router/src/http/server.rs`, `types.rs`): its predict body at POST /predict, /invocations and /
(where the model card's `{"input_data": ...}` body still goes to /score's handler), /tokenize,
/decode, and its request counters. Unknown fields are ignored, as TEI's request structs ignore
them (huggingface_hub's InferenceClient sends `parameters`)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated, Any, Literal, Protocol, TypeVar

import numpy as np
from fastapi import Body, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, StrictBool, StrictInt, StrictStr, ValidationError
from tokenizers import Encoding

from flaxsent.core.classifier import Classifier
from flaxsent.io.records import score_first
from flaxsent.serve.http import ApiError
from flaxsent.serve.metrics import ServeMetrics

TokenId = Annotated[StrictInt, Field(ge=0, le=2 ** 32 - 1)]  # TEI's u32
M = TypeVar("M", bound=BaseModel)


class PredictRequest(BaseModel):
    """TEI's predict body: `inputs` is "text", ["text"] (one input) or [["a"], ["b"], ...]."""

    inputs: StrictStr | list[StrictStr | list[StrictStr]]
    truncate: StrictBool | None = None  # null or absent: truncate (flaxsent's auto_truncate)
    truncation_direction: Literal["right", "Right", "left", "Left"] = "right"
    raw_scores: StrictBool = False


class TokenizeRequest(BaseModel):
    """TEI's /tokenize body: one text or a list of texts."""

    inputs: StrictStr | list[StrictStr]
    add_special_tokens: StrictBool = True


class DecodeRequest(BaseModel):
    """TEI's /decode body: one list of ids, or a list of them."""

    ids: list[TokenId] | list[list[TokenId]]
    skip_special_tokens: StrictBool = True


class ErrorResponse(BaseModel):
    """Every error's body, as TEI's (error_type spelt as its ErrorType enum: "Validation")."""

    error: str
    error_type: Literal["Unhealthy", "Backend", "Overloaded", "Validation", "Tokenizer", "Empty",
                        "Unauthorized"]


class ServiceView(Protocol):
    """What TEI's routes use of the server's service (`app.Service`)."""

    clf: Classifier
    metrics: ServeMetrics

    def check_count(self, n: int, field: str) -> None: ...

    async def infer(self, texts: list[str], truncation: bool, name: Callable[[int], str],
                    started: float) -> tuple[np.ndarray, dict[str, str]]: ...


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": what} for status, what in (
        (400, "Empty batch"), (401, "Missing or wrong API key"), (413, "Body too large"),
        (422, "Invalid request, or an input over the model's limit with truncation off"),
        (424, "Inference failed"), (429, "Model is overloaded"),
        (503, "Warming up or shutting down"))}


def predict_inputs(inputs: str | list) -> tuple[list[str], bool]:
    """TEI's reading of `inputs` as (texts, single): "text" and ["text"] are one input (a flat
    list of predictions back); [["a"], ["b"], ...] is a batch. TEI reads ["a", "b"], alone or
    in a batch, as a text pair, which this single-text model refuses (422)."""
    if isinstance(inputs, str):
        return [inputs], True
    if not inputs:
        raise ApiError("empty", "inputs: the batch is empty")
    if isinstance(inputs[0], str):  # TEI: the whole list is one sequence
        if len(inputs) == 1:
            return [inputs[0]], True
        raise ApiError("validation", f"inputs: a list of {len(inputs)} strings is "
                       + ("a text pair in TEI's API, and this model classifies single texts"
                          if len(inputs) == 2 else "not an input in TEI's API")
                       + '; send a batch as [["text"], ["text"], ...]')
    texts = []
    for i, item in enumerate(inputs):
        if isinstance(item, str) or len(item) != 1:
            what = ("a string" if isinstance(item, str) else "a text pair" if len(item) == 2
                    else f"a list of {len(item)} strings")
            raise ApiError("validation", f"inputs[{i}]: {what}; each input of a batch is a "
                           'one-element list ["text"] (this model classifies single texts)')
        texts.append(item[0])
    return texts, False


@contextlib.contextmanager
def failures_counted(metrics: ServeMetrics) -> Iterator[None]:
    """te_request_failure{err} for an ApiError raised inside (TEI's label for it)."""
    try:
        yield
    except ApiError as e:
        if e.failure:
            metrics.te_failure.inc(e.failure)
        raise


@contextlib.contextmanager
def counted(metrics: ServeMetrics, single: bool) -> Iterator[None]:
    """TEI's counters around one inference request: te_request_count{method}, then
    te_request_success{method} or te_request_failure{err}."""
    method = "single" if single else "batch"
    metrics.te_count.inc(method)
    with failures_counted(metrics):
        yield
    metrics.te_success.inc(method)


def _validated(model: type[M], data: Any) -> M:
    """data as model, or the 422 FastAPI gives for a body that does not fit it."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise RequestValidationError([{**error, "loc": ("body", *error["loc"])}
                                      for error in e.errors()]) from None


def _tokens(encoding: Encoding, text: str) -> list[dict[str, Any]]:
    """TEI's SimpleToken list: a special token's text is itself, with no offsets; another's is
    its span of the input, with offsets in UTF-8 bytes (TEI's, from Rust)."""
    to_bytes = None if text.isascii() else [0, *itertools.accumulate(
        len(char.encode()) for char in text)]
    tokens = []
    for id_, token, (start, stop), special in zip(
            encoding.ids, encoding.tokens, encoding.offsets, encoding.special_tokens_mask,
            strict=True):
        if special:
            tokens.append({"id": id_, "text": token, "special": True, "start": None,
                           "stop": None})
        else:
            tokens.append({"id": id_, "text": text[start:stop], "special": False,
                           "start": start if to_bytes is None else to_bytes[start],
                           "stop": stop if to_bytes is None else to_bytes[stop]})
    return tokens


def add_routes(app: FastAPI, service: ServiceView, card: Callable[[Any], Awaitable[Response]],
               card_body: type[BaseModel]) -> None:
    """TEI's routes on app; POST / hands a body with `input_data` to card(card_body(...))."""
    clf = service.clf

    async def predict(body: PredictRequest) -> JSONResponse:
        """TEI's predict: every label, highest score first; a batch gives a list of those."""
        started = time.perf_counter()
        texts, single = predict_inputs(body.inputs)
        with counted(service.metrics, single):
            if body.truncation_direction.lower() == "left":
                raise ApiError("validation", "truncation_direction 'left' is not supported: "
                               "flaxsent truncates on the right, as this model's tokenizer does")
            service.check_count(len(texts), "inputs")
            logits, headers = await service.infer(
                texts, True if body.truncate is None else body.truncate,
                lambda i: "inputs" if single else f"inputs[{i}]", started)
        function = "none" if body.raw_scores else "softmax" if clf.config.num_labels > 1 \
            else "sigmoid"
        predictions = [score_first(clf.format_scores(row, None, function)) for row in logits]
        return JSONResponse(predictions[0] if single else predictions, headers=headers)

    for path in ("/predict", "/invocations"):  # /invocations: SageMaker's name for it
        app.post(path, responses=ERRORS)(predict)

    root_body = {"requestBody": {"content": {"application/json": {"schema": {"oneOf": [
        {"$ref": f"#/components/schemas/{model.__name__}"}
        for model in (PredictRequest, card_body)]}}}}}

    @app.post("/", responses=ERRORS, openapi_extra=root_body)
    async def root(body: Annotated[dict[str, Any], Body()]) -> Response:
        """TEI's predict; a body with `input_data` is the model card's, answered as /score."""
        if "input_data" in body:
            return await card(_validated(card_body, body))
        return await predict(_validated(PredictRequest, body))

    @app.post("/tokenize", responses=ERRORS)
    async def tokenize(body: TokenizeRequest) -> JSONResponse:
        """TEI's /tokenize: each text's tokens, untruncated, with their byte offsets."""
        texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
        with failures_counted(service.metrics):
            service.check_count(len(texts), "inputs")
            try:
                encodings = await asyncio.to_thread(clf.tokenizer.encodings, texts,
                                                    body.add_special_tokens)
            except TypeError as e:  # what the tokenizers library says of a lone surrogate
                raise ApiError("tokenizer", f"inputs: a text the tokenizer cannot read ({e})"
                               ) from None
        return JSONResponse([_tokens(encoding, text)
                             for encoding, text in zip(encodings, texts, strict=True)])

    @app.post("/decode", responses=ERRORS)
    async def decode(body: DecodeRequest) -> JSONResponse:
        """TEI's /decode: the text of each list of ids."""
        single = not body.ids or isinstance(body.ids[0], int)
        batch = [body.ids] if single else body.ids
        with failures_counted(service.metrics):
            service.check_count(len(batch), "ids")
        # as in TEI (the same library), ids past the vocabulary are skipped
        return JSONResponse([clf.tokenizer.decode(ids, body.skip_special_tokens)
                             for ids in batch])
