"""The server under generated requests, in-process on a tiny random-weight model: schemathesis
draws requests from the app's own OpenAPI schema (fitting it and not), hypothesis draws bodies
beyond it (random JSON, bad bytes, deep nesting, lone surrogates). Every answer is a result of
the right shape or a documented error object; never a 500."""

import json
import math
from collections import Counter

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from flaxsent import Classifier
from flaxsent.serve.app import ServeOptions, create_app
from flaxsent.serve.http import INFERENCE_ROUTES, STATUS, error_type

KIND = {error_type(kind): kind for kind in STATUS}  # "NotFound" -> "not_found"

BATCH = 4  # --max-client-batch-size of the app under test
LABELS = {"NEGATIVE", "POSITIVE"}
ROUTES = ["/score", "/", "/predict", "/invocations", "/tokenize", "/decode", "/info", "/health",
          "/ping", "/metrics", "/openapi.json", "/x"]
SETTINGS = settings(deadline=None, database=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))
sent: Counter = Counter()  # generated requests sent, by suite and status


@pytest.fixture(scope="module")
def client(tiny_flax, tmp_path_factory):
    clf = Classifier.from_pretrained(tiny_flax, cache_dir=tmp_path_factory.mktemp("cache"),
                                     max_batch_tokens=128)
    app = create_app(clf, ServeOptions(max_client_batch_size=BATCH, max_wait_ms=0,
                                       payload_limit=100_000))
    with TestClient(app) as c:
        assert app.state.service.batcher.wait_ready(120)
        yield c
    print(f"\ngenerated requests sent: {sum(sent.values())}, by suite and status: "
          f"{dict(sorted(sent.items()))}")


def _scores(results: list, every_label: bool) -> None:
    """Each result is {"label", "score"} (any key order) with a known label and a finite score;
    with every_label, the list holds each label once."""
    assert isinstance(results, list) and results
    for result in results:
        assert set(result) == {"label", "score"} and result["label"] in LABELS
        assert isinstance(result["score"], float) and math.isfinite(result["score"])
    if every_label:
        assert sorted(r["label"] for r in results) == sorted(LABELS)


def _check_result(path: str, sent_body: object, answer: object) -> None:
    """An inference route's 200 is the result the request asked for, one per input: TEI's shape
    for TEI's `inputs`, the card's for its `input_data`."""
    assert isinstance(sent_body, dict)
    if path != "/score" and "input_data" not in sent_body:
        inputs = sent_body["inputs"]
        # TEI's one input: "text" or ["text"] (a flat list of predictions back)
        single = isinstance(inputs, str) or len(inputs) == 1 and isinstance(inputs[0], str)
        batch = [answer] if single else answer
        assert isinstance(batch, list) and len(batch) == (1 if single else len(inputs))
        for every_label in batch:
            _scores(every_label, True)
        return
    texts = sent_body["input_data"]
    top_k = (sent_body.get("parameters") or {}).get("top_k", 1)
    if isinstance(texts, str) and top_k != 1:
        _scores(answer, False)
        assert len(answer) == (len(LABELS) if top_k is None else min(top_k, len(LABELS)))
        return
    assert isinstance(answer, list) and len(answer) == (1 if isinstance(texts, str)
                                                        else len(texts))
    for result in answer:
        _scores(result if isinstance(result, list) else [result], False)


def check_answer(method: str, path: str, content: bytes, response) -> None:
    """Never a 5xx; an error is `{"error", "error_type"}` with its documented status; a 200 is
    a result of the right shape."""
    status = response.status_code
    assert status < 500, (method, path, content[:300], response.text[:300])
    if status >= 400:
        body = response.json()
        assert set(body) == {"error", "error_type"} and body["error"], body
        assert STATUS[KIND[body["error_type"]]] == status or (status, body["error_type"]) == (
            413, "Validation"), (status, body)
        return
    assert status == 200, (status, response.text[:300])
    if method == "POST" and path in INFERENCE_ROUTES:
        _check_result(path, json.loads(content), response.json())


def test_requests_drawn_from_the_openapi_schema_get_a_result_or_a_documented_error(client):
    schema = schemathesis.openapi.from_dict(client.app.openapi())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /score", "POST /", "POST /predict"}
    for operation in operations:
        post = operation.method == "post"  # a body: requests that fit the schema and not
        modes = list(GenerationMode) if post else [GenerationMode.POSITIVE]
        for mode in modes:
            @settings(SETTINGS, max_examples=60 if post else 5)
            @given(case=operation.as_strategy(generation_mode=mode))
            def drawn(case):
                kwargs = case.as_transport_kwargs(base_url="")
                request = client.build_request(
                    case.method, case.formatted_path, headers=kwargs.get("headers"),
                    params=kwargs.get("params"), json=kwargs.get("json"),
                    content=kwargs.get("data"))
                response = client.send(request)
                check_answer(case.method.upper(), case.formatted_path, request.content,
                             response)
                sent["schema", response.status_code] += 1

            drawn()


# any code point, lone surrogates (which JSON's "\\ud800" escapes carry) often among them
_text = st.text(st.characters(codec=None, exclude_categories=()) | st.characters(categories=["Cs"]),
                max_size=20)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _text,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_text, inner, max_size=5),
    max_leaves=20)
# each route's own body, every field often right and sometimes any JSON at all
_score_body = st.fixed_dictionaries(
    {"input_data": st.lists(_text, max_size=BATCH + 1) | _text | _json},
    optional={"parameters": st.none() | _json | st.fixed_dictionaries({}, optional={
        "top_k": st.none() | st.integers(-1, 3) | st.integers() | _json,
        "function_to_apply": st.sampled_from(["softmax", "sigmoid", "none"]) | _json,
        "truncation": st.booleans() | _json}), "extra": _json})
_predict_body = st.fixed_dictionaries(
    {"inputs": _text | st.lists(_text | st.lists(_text, max_size=2), max_size=BATCH + 1) | _json},
    optional={"truncate": st.none() | st.booleans() | _json,
              "raw_scores": st.booleans() | _json,
              "truncation_direction": st.sampled_from(["right", "Right", "left"]) | _json})
_routes = st.sampled_from([("POST", "/score")] * 3 + [("POST", "/")] * 2
                          + [("POST", "/predict")] * 3
                          + [("POST", "/invocations"), ("POST", "/tokenize"), ("POST", "/decode")]
                          + [("GET", route) for route in ROUTES] + [("PUT", "/info")])


def _deep(depth: int, opener: bytes) -> bytes:
    """JSON nested `depth` deep."""
    return opener * depth + b"1" + {b"[": b"]", b'{"a":': b"}"}[opener] * depth


@st.composite
def _requests(draw: st.DrawFn) -> tuple[str, str, bytes, str | None]:
    """(method, path, body, content type): the route's own body, sent as JSON with its
    surrogates escaped or raw, cut or with bytes after it; or any JSON, bytes, deep nesting."""
    method, path = draw(_routes)
    fitting = draw(_score_body if path == "/score" else _predict_body if path != "/"
                   else _score_body | _predict_body)
    body = draw(st.one_of(
        st.just(json.dumps(fitting).encode()),
        st.just(json.dumps(fitting, ensure_ascii=False).encode("utf-8", "surrogatepass")),
        st.binary(max_size=20).map(lambda tail: json.dumps(fitting).encode() + tail),
        _json.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=200),
        st.builds(_deep, st.integers(1, 20_000) | st.sampled_from([990, 1000, 20_000]),
                  st.sampled_from([b"[", b'{"a":']))))
    content_type = draw(st.sampled_from(["application/json"] * 4 + ["text/plain", None]))
    return method, path, body, content_type


@settings(SETTINGS, max_examples=300)
@given(request=_requests())
def test_bodies_beyond_the_schema_get_a_result_or_a_documented_error(client, request):
    method, path, content, content_type = request
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.request(method, path, content=content, headers=headers)
    check_answer(method, path, content, response)
    sent["beyond", response.status_code] += 1
