"""`flaxsent serve` speaks text-embeddings-inference's API: huggingface_hub's InferenceClient
against a live server, TEI's reading of `inputs`, each answer and error checked against TEI's
wire shapes (tests/fixtures/tei_schemas.json, written from TEI's openapi.json), its health,
tokenize and decode routes, and its metric names."""

import json
import re

import httpx
import jsonschema
import pytest
from fastapi.testclient import TestClient
from huggingface_hub import InferenceClient, constants
from prometheus_client.parser import text_string_to_metric_families

from flaxsent import Classifier
from flaxsent.serve.app import ServeOptions, create_app
from flaxsent.serve.http import ApiError
from flaxsent.serve.tei import predict_inputs
from tests.helpers import FIXTURES, serving

KEY = "tei-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
TEXTS = ["the movie was great", "awful acting , boring plot", ""]
SCHEMAS = json.loads((FIXTURES / "tei_schemas.json").read_text(encoding="utf-8"))


def conforms(body, shape):
    """Raise unless body is TEI's `shape` (a $defs name of the fixture)."""
    jsonschema.Draft202012Validator({**SCHEMAS, "$ref": f"#/$defs/{shape}"}).validate(body)


def _same(ours, theirs):
    """Server predictions equal the Classifier's: labels in order, scores to 1e-6."""
    assert [p["label"] for p in ours] == [p["label"] for p in theirs]
    assert [p["score"] for p in ours] == pytest.approx([p["score"] for p in theirs], abs=1e-6)


@pytest.fixture(scope="module")
def server(tiny_flax, tmp_path_factory):
    with serving(tiny_flax, tmp_path_factory.mktemp("tei"), "--max-batch-tokens", "256",
                 "--max-client-batch-size", "4", env={"FLAXSENT_API_KEY": KEY}) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as c:
        yield c


# ---- huggingface_hub's client, unchanged -----------------------------------------------------

@pytest.fixture
def online(monkeypatch):
    """The tests' offline mode blocks every request huggingface_hub's client makes: lifted
    here, where the client reaches only the server on 127.0.0.1."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def hub(server, online):
    """The client of a TEI endpoint, at the server's URL."""
    return InferenceClient(base_url=server.url, api_key=KEY, timeout=60)


def test_the_hub_client_classifies_one_text_at_the_root_route(hub, ref):
    best = ref(TEXTS[0], top_k=None)[0]
    # the client posts {"inputs": text, "parameters": {...}} to / and keeps the first element
    # of TEI's flat list: the top prediction (TEI ignores `parameters`, and so does flaxsent)
    for out in (hub.text_classification(TEXTS[0]),
                hub.text_classification(TEXTS[0], top_k=2, function_to_apply="sigmoid")):
        assert out.label == best["label"] and out.score == pytest.approx(best["score"], abs=1e-6)


def test_the_hub_clients_endpoint_helpers_read_health_and_info(server, online, ref):
    # as for an Inference Endpoint: the URL as the model, on the hf-inference provider
    endpoint = InferenceClient(server.url, provider="hf-inference", api_key=KEY, timeout=60)
    assert endpoint.health_check() is True
    assert endpoint.get_endpoint_info()["model_type"]["classifier"]["id2label"] == {
        "0": "NEGATIVE", "1": "POSITIVE"}
    assert endpoint.text_classification(TEXTS[1]).label == ref(TEXTS[1])[0]["label"]


def test_the_hub_client_carries_teis_batch_form(hub, ref):
    # text_classification types `text` as a string but sends it as `inputs` unchanged: TEI's
    # batch goes through, and the client keeps the first input's predictions (its [0])
    out = hub.text_classification([[TEXTS[1]], [TEXTS[0]]])
    _same([{"label": p.label, "score": p.score} for p in out], ref(TEXTS[1], top_k=None))


# ---- predict: TEI's reading of `inputs`, at each of its routes ------------------------------

@pytest.mark.parametrize("path", ["/predict", "/invocations", "/"])
@pytest.mark.parametrize(("inputs", "single"), [
    (TEXTS[0], True), ([TEXTS[0]], True), ([[t] for t in TEXTS], False), ([[TEXTS[2]]], False)])
def test_predict_reads_inputs_as_tei_does(client, ref, path, inputs, single):
    body = {"inputs": inputs}
    conforms(body, "PredictRequest")
    r = client.post(path, json=body)
    assert r.status_code == 200, r.text
    conforms(r.json(), "PredictSingle" if single else "PredictBatch")
    texts = [inputs] if isinstance(inputs, str) else [i if isinstance(i, str) else i[0]
                                                     for i in inputs]
    expected = ref(texts, top_k=None)  # every label, highest first
    if single:
        _same(r.json(), expected[0])
        assert list(r.json()[0]) == ["score", "label"]  # TEI's key order
    else:
        for ours, theirs in zip(r.json(), expected, strict=True):
            _same(ours, theirs)


def test_raw_scores_are_the_logits(client, ref):
    r = client.post("/predict", json={"inputs": [[t] for t in TEXTS], "raw_scores": True})
    for ours, theirs in zip(r.json(), ref(TEXTS, top_k=None, function_to_apply="none"),
                            strict=True):
        _same(ours, theirs)


@pytest.mark.parametrize("path", ["/predict", "/invocations", "/"])
def test_unknown_fields_are_ignored_as_in_tei(client, ref, path):
    r = client.post(path, json={"inputs": TEXTS[0], "parameters": {"top_k": 1}, "extra": [1]})
    assert r.status_code == 200, r.text
    _same(r.json(), ref(TEXTS[0], top_k=None))


def test_the_root_route_still_takes_the_cards_body(client, ref):
    r = client.post("/", json={"input_data": TEXTS[:2], "parameters": {"top_k": None}})
    assert r.status_code == 200
    for ours, theirs in zip(r.json(), ref(TEXTS[:2], top_k=None), strict=True):
        _same(ours, theirs)
    r = client.post("/", json={"input_data": ["a"], "parameters": {"topk": 2}})
    assert r.status_code == 422
    assert r.json()["error"] == "parameters.topk: Extra inputs are not permitted"


@pytest.mark.parametrize(("inputs", "message"), [
    (["a", "b"], r"^inputs: a list of 2 strings is a text pair in TEI's API"),
    (["a", "b", "c"], r"^inputs: a list of 3 strings is not an input in TEI's API"),
    ([["a"], ["b", "c"]], r"^inputs\[1\]: a text pair;"),
    ([["a"], "b"], r"^inputs\[1\]: a string;"),
    ([["a"], []], r"^inputs\[1\]: a list of 0 strings;"),
])
def test_text_pairs_and_lists_tei_refuses_are_422(client, inputs, message):
    r = client.post("/predict", json={"inputs": inputs})
    assert r.status_code == 422
    conforms(r.json(), "ErrorResponse")
    assert r.json()["error_type"] == "Validation"
    assert re.search(message, r.json()["error"]), r.json()["error"]


@pytest.mark.parametrize(("inputs", "read"), [
    ("a", (["a"], True)), (["a"], (["a"], True)), ([["a"], ["b"]], (["a", "b"], False)),
    (["a", "b"], None), ([["a"], ["b", "c"]], None), (["a", "b", "c"], None), ([], None),
    ([["a"], "b"], None)])
def test_predict_inputs_reads_what_teis_deserializer_reads(inputs, read):
    """types.rs: a string or a one-string list is one input, a list of lists a batch; pairs
    (which TEI takes) and what TEI rejects are refused."""
    if read is not None:
        assert predict_inputs(inputs) == read
    else:
        with pytest.raises(ApiError) as refused:
            predict_inputs(inputs)
        assert refused.value.status in (400, 422)


# ---- errors: TEI's shape and status codes ---------------------------------------------------

LONG = "great " * 80  # > 64 tokens
ERRORS = [
    ("/predict", {"inputs": []}, 400, "Empty"),
    ("/predict", {"inputs": [["a"]] * 5}, 422, "Validation"),
    ("/predict", {"inputs": LONG, "truncate": False}, 422, "Validation"),
    ("/predict", {"inputs": 3}, 422, "Validation"),
    ("/predict", {"inputs": "a", "truncation_direction": "left"}, 422, "Validation"),
    ("/tokenize", {"inputs": ["a"] * 5}, 422, "Validation"),
    ("/tokenize", {"inputs": []}, 400, "Empty"),
    ("/decode", {"ids": [[1]] * 5}, 422, "Validation"),
    ("/decode", {"ids": [-1]}, 422, "Validation"),
]


@pytest.mark.parametrize(("path", "body", "status", "error_type"), ERRORS)
def test_errors_are_teis_error_response(client, path, body, status, error_type):
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    conforms(r.json(), "ErrorResponse")
    assert r.json()["error_type"] == error_type


def test_health_is_public_at_teis_three_routes_and_info_is_teis(server, client):
    for path in ("/health", "/", "/ping"):
        assert httpx.get(f"{server.url}{path}").status_code == 200, path
    info = client.get("/info").json()
    conforms(info, "Info")
    assert (info["quantize"], info["runtime"]) == ("none", "jax")


def test_the_openapi_document_lists_teis_routes(server):
    doc = httpx.get(f"{server.url}/openapi.json").json()
    assert {"/predict", "/invocations", "/", "/tokenize", "/decode", "/info", "/health"} <= set(
        doc["paths"])
    assert doc["paths"]["/predict"]["post"]["responses"]["422"]["content"]["application/json"][
        "schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
    assert "swagger" in httpx.get(f"{server.url}/docs").text.lower()


# ---- tokenize and decode ---------------------------------------------------------------------

def test_tokenize_gives_teis_tokens_with_byte_offsets(client, ref):
    texts = ["the movie was great", "café ! fun"]
    body = {"inputs": texts}
    conforms(body, "TokenizeRequest")
    r = client.post("/tokenize", json=body)
    assert r.status_code == 200, r.text
    conforms(r.json(), "TokenizeResponse")
    ids, _ = ref.tokenizer.encode_batch(texts)
    for tokens, text, expected in zip(r.json(), texts, ids, strict=True):
        assert [t["id"] for t in tokens] == expected
        assert tokens[0] == {"id": ref.tokenizer.cls_id, "text": "[CLS]", "special": True,
                             "start": None, "stop": None}
        for t in tokens[1:-1]:  # a span of the input, in UTF-8 bytes as TEI (Rust) counts
            assert not t["special"]
            assert text.encode()[t["start"]:t["stop"]].decode() == t["text"]
    r = client.post("/tokenize", json={"inputs": texts[0], "add_special_tokens": False})
    assert [t["id"] for t in r.json()[0]] == ids[0][1:-1]


def test_a_text_the_tokenizer_cannot_read_is_422(client):
    r = client.post("/tokenize", content=b'{"inputs": "a\\ud800"}',  # a lone surrogate
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    conforms(r.json(), "ErrorResponse")


def test_decode_gives_what_the_checkpoints_rust_tokenizer_gives(client, ref, tiny_hf):
    """TEI decodes with the tokenizers library and the checkpoint's tokenizer.json, as
    transformers builds it (WordPiece pieces joined, spaces before punctuation cleaned)."""
    from transformers import AutoTokenizer
    theirs = AutoTokenizer.from_pretrained(tiny_hf).backend_tokenizer
    ids = ref.tokenizer.encode_batch(["zebras , fun !", TEXTS[0]])[0]
    for body in ({"ids": ids[0]}, {"ids": ids}, {"ids": ids[0], "skip_special_tokens": False}):
        conforms(body, "DecodeRequest")
        r = client.post("/decode", json=body)
        assert r.status_code == 200, r.text
        conforms(r.json(), "DecodeResponse")
        batch = ids if isinstance(body["ids"][0], list) else [ids[0]]
        assert r.json() == [theirs.decode(i, skip_special_tokens=body.get(
            "skip_special_tokens", True)) for i in batch]
    assert "##" not in r.json()[0]  # WordPiece's pieces joined


# ---- metrics: TEI's names, labels and values --------------------------------------------------

def _scrape(url):
    text = httpx.get(f"{url}/metrics", timeout=30).text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    return text, samples


def test_teis_metrics_are_exported_after_requests(server, client):
    _, before = _scrape(server.url)
    assert client.post("/predict", json={"inputs": "fine"}).status_code == 200
    assert client.post("/", json={"inputs": [["a"], ["b"]]}).status_code == 200
    assert client.post("/score", json={"input_data": ["c"]}).status_code == 200  # counts too
    assert client.post("/predict", json={"inputs": [["a"]] * 5}).status_code == 422
    assert client.post("/predict", json={"inputs": [[LONG]], "truncate": False}
                       ).status_code == 422
    text, after = _scrape(server.url)

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert delta("te_request_count", method="single") == 1
    assert delta("te_request_count", method="batch") == 4
    assert delta("te_request_success", method="single") == 1
    assert delta("te_request_success", method="batch") == 2
    assert delta("te_request_failure", err="batch_size") == 1
    assert delta("te_request_failure", err="tokenization") == 1
    for name in ("te_request_duration", "te_request_tokenization_duration",
                 "te_request_queue_duration", "te_request_inference_duration"):
        assert delta(f"{name}_count") == 3, name
    assert delta("te_request_input_length_count") == 4
    assert delta("te_batch_next_size_count") >= 1 and delta("te_batch_next_tokens_count") >= 1
    assert ("te_queue_size", ()) in after
    # the samples carry TEI's exact names (no `_total`), as TEI's exporter writes them
    assert re.search(r'^te_request_count\{method="batch"\} \d', text, re.M)
    assert "te_request_count_total" not in text
    assert delta("flaxsent_inputs_total") == 4  # flaxsent's own metrics stay


def test_a_request_refused_as_overloaded_counts_as_teis_overloaded_failure(tiny_flax, tmp_path):
    clf = Classifier.from_pretrained(tiny_flax, cache_dir=tmp_path, max_batch_tokens=256)
    with TestClient(create_app(clf, ServeOptions(max_concurrent_requests=1))) as c:
        service = c.app.state.service
        assert service.batcher.wait_ready(60)
        service.in_flight = 1  # one request being served: the limit
        r = c.post("/", json={"inputs": "a"})
        assert r.status_code == 429
        conforms(r.json(), "ErrorResponse")
        service.in_flight = 0
        samples = {(s.name, tuple(s.labels.items())): s.value for family in
                   text_string_to_metric_families(c.get("/metrics").text)
                   for s in family.samples}
    assert samples[("te_request_failure", (("err", "overloaded"),))] == 1
