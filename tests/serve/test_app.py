"""`flaxsent serve` against real server processes on free ports: both contracts equal the
Classifier's outputs, every error code, 256 concurrent requests, SIGTERM under load, metrics."""

import asyncio
import json
import re
import shutil
import signal
import socket
import threading
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from safetensors.numpy import load_file, save_file

from flaxsent import Classifier
from flaxsent.cli import main
from flaxsent.serve.app import ServeOptions, create_app
from tests.helpers import ROOT, WORDS, serving

KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}
CARD = ["Today was an amazing day!", "It was an unfortunate series of events."]


def _random_requests(n, seed, max_texts=8):
    rng = np.random.default_rng(seed)
    return [[" ".join(rng.choice(WORDS, rng.integers(0, 30)))
             for _ in range(rng.integers(1, max_texts + 1))] for _ in range(n)]


def _same(ours, theirs):
    """Server JSON equals Classifier output: same labels, same structure, scores to 1e-6."""
    if isinstance(theirs, dict):
        assert set(ours) == {"label", "score"} and ours["label"] == theirs["label"]
        assert ours["score"] == pytest.approx(theirs["score"], abs=1e-6)
    else:
        assert isinstance(ours, list) and len(ours) == len(theirs)
        for a, b in zip(ours, theirs, strict=True):
            _same(a, b)


def _scrape(url):
    """{(name, labels): value} of every sample on /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def _post_all(url, bodies, path="/score", headers=None):
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120,
                                 headers=headers) as client:
        return await asyncio.gather(*(client.post(path, json=b) for b in bodies))


@pytest.fixture(scope="module")
def server(tiny_flax, tmp_path_factory):
    with serving(tiny_flax, tmp_path_factory.mktemp("main"), "--max-batch-tokens", "256",
                 "--max-client-batch-size", "8", "--payload-limit", "20000",
                 "--max-wait-ms", "5", env={"FLAXSENT_API_KEY": KEY}) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as c:
        yield c


# ---- the two contracts ----------------------------------------------------------------------

@pytest.mark.parametrize("parameters", [None, {"top_k": 1}, {"top_k": None}, {"top_k": 2},
                                        {"function_to_apply": "sigmoid"},
                                        {"function_to_apply": "none", "top_k": None},
                                        {"truncation": False}])
@pytest.mark.parametrize("path", ["/score", "/"])
def test_score_is_the_cards_contract(client, ref, parameters, path):
    body = {"input_data": CARD} if parameters is None else \
        {"input_data": CARD, "parameters": parameters}
    r = client.post(path, json=body)
    assert r.status_code == 200, r.text
    _same(r.json(), ref(CARD, **(parameters or {})))


def test_null_parameters_are_the_defaults(client, ref):
    r = client.post("/score", json={"input_data": CARD, "parameters": None})
    _same(r.json(), ref(CARD))


@pytest.mark.parametrize("top_k", [1, None])
def test_score_of_one_string_is_what_the_classifier_gives(client, ref, top_k):
    r = client.post("/score", json={"input_data": "fun !", "parameters": {"top_k": top_k}})
    assert r.status_code == 200
    _same(r.json(), ref("fun !", top_k=top_k))


def test_predict_answers_with_teis_timing_headers(client, ref):
    texts = ["the movie was great", "awful acting , boring plot", ""]
    r = client.post("/predict", json={"inputs": [[t] for t in texts]})
    assert r.status_code == 200
    for name in ("x-compute-time", "x-queue-time", "x-inference-time", "x-compute-tokens",
                 "x-tokenization-time", "x-total-time", "x-compute-characters"):
        assert r.headers[name].isdigit(), name
    assert int(r.headers["x-compute-tokens"]) == sum(
        len(ids) for ids in ref.tokenizer.encode_batch(texts)[0])


def test_info_and_health(server, client, ref):
    info = client.get("/info").json()
    assert info["model_type"] == {"classifier": {"id2label": {"0": "NEGATIVE", "1": "POSITIVE"},
                                                 "label2id": {"NEGATIVE": 0, "POSITIVE": 1}}}
    assert info["max_input_length"] == ref.tokenizer.max_length == 64
    assert info["max_client_batch_size"] == 8 and info["max_concurrent_requests"] == 512
    assert info["max_batch_tokens"] == 256 and info["model_dtype"] == "float32"
    # the classifier's shapes, each at its full rows and smaller rungs (light load)
    assert info["shapes"] == [list(s) for s in ref.shapes()]
    assert [4, 64, 8] in info["shapes"] and [1, 64, 8] in info["shapes"]
    assert info["version"]
    assert httpx.get(f"{server.url}/health").status_code == 200  # public, as in TEI


# ---- errors: status codes and TEI's error JSON -----------------------------------------------

LONG = "great " * 80  # > 64 tokens
ERRORS = [
    ("/score", {"input_data": []}, 400, "empty", r"input_data: the batch is empty"),
    ("/predict", {"inputs": []}, 400, "empty", r"inputs: the batch is empty"),
    ("/score", {"input_data": ["a"] * 9}, 422, "validation", r"batch size 9 > maximum .* 8"),
    ("/predict", {"inputs": [["a"]] * 9}, 422, "validation", r"batch size 9 > maximum .* 8"),
    ("/score", {"input_data": ["a", 3]}, 422, "validation", r"input_data\[1\]: .*valid string"),
    ("/score", {"input_data": ["ok", LONG], "parameters": {"truncation": False}}, 422,
     "validation", r"input_data\[1\] is 82 tokens long, over the model's limit of 64"),
    ("/predict", {"inputs": [["ok"], [LONG]], "truncate": False}, 422, "validation",
     r"inputs\[1\] is 82 tokens long"),
    ("/predict", {"inputs": [["a"], ["b", "c"]]}, 422, "validation", r"inputs\[1\]: a text pair"),
    ("/predict", {"inputs": "a", "truncation_direction": "left"}, 422, "validation", r"left"),
    ("/score", {"input_data": ["a"], "parameters": {"topk": 2}}, 422, "validation",
     r"parameters\.topk: Extra inputs are not permitted$"),
    ("/score", {"inputs": ["a"]}, 422, "validation", r"input_data: Field required$"),
    ("/score", {"input_data": ["a"], "parameters": {"top_k": 0}}, 422, "validation",
     r"parameters\.top_k: .*greater than or equal to 1"),
    ("/score", b'{"input_data": [', 422, "validation", r"not valid JSON"),
    ("/score", b'{"input_data": ["a"]}', 422, "validation", r"Content-Type: application/json"),
    ("/score", {"input_data": ["x" * 30_000]}, 413, "validation", r"payload limit of 20000"),
]


@pytest.mark.parametrize(("path", "body", "status", "kind", "message"), ERRORS)
def test_errors_have_teis_codes_and_shape(client, path, body, status, kind, message):
    if isinstance(body, bytes):  # raw bytes: JSON only when they are broken
        typed = body.endswith(b"[")
        r = client.post(path, content=body,
                        headers={"Content-Type": "application/json"} if typed else {})
    else:
        r = client.post(path, json=body)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error", "error_type"}
    assert r.json()["error_type"] == kind.capitalize()  # as TEI's ErrorType enum spells it
    assert re.search(message, r.json()["error"]), r.json()["error"]


@pytest.mark.parametrize(("path", "body", "where"), [
    ("/score", b'{"input_data": ["fine", "\\ud800"]}', r"input_data\[1\]: .* \(U\+D800\) at "
     r"character 0"),
    ("/predict", b'{"inputs": [["fine"], ["a \\udfff"]]}', r"inputs\[1\]: .*U\+DFFF"),
    ("/score", '{"input_data": "a\ud800"}'.encode("utf-8", "surrogatepass"), r"input_data: "),
])
def test_a_lone_surrogate_is_a_422_tokenizer_error_never_a_500(client, path, body, where):
    """JSON can carry a lone UTF-16 surrogate (escaped, or as raw UTF-8-style bytes, which the
    JSON decoder lets through); the tokenizer cannot take one."""
    r = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["error_type"] == "Tokenizer" and re.search(where, r.json()["error"])


def test_a_chunked_body_over_the_limit_is_413(client):
    chunks = iter([b'{"input_data": ["', b"x" * 15_000, b"x" * 15_000, b'"]}'])
    r = client.post("/score", content=chunks, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error_type"] == "Validation"


def test_the_api_key_is_required_except_for_health_metrics_and_docs(server):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        for method, path in (("POST", "/score"), ("POST", "/predict"), ("POST", "/"),
                             ("POST", "/invocations"), ("POST", "/tokenize"),
                             ("POST", "/decode"), ("GET", "/info")):
            r = httpx.request(method, f"{server.url}{path}", json={"input_data": ["a"]},
                              headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    for path in ("/metrics", "/health", "/", "/ping", "/docs", "/openapi.json"):  # as in TEI
        assert httpx.get(f"{server.url}{path}").status_code == 200, path


# ---- load: many requests, each with its own results ----------------------------------------

def test_256_concurrent_requests_each_get_their_own_results_in_order(server, ref):
    requests = _random_requests(256, seed=11)
    responses = asyncio.run(_post_all(server.url, [{"input_data": t} for t in requests],
                                      headers=AUTH))
    expected = ref([t for texts in requests for t in texts])
    at = 0
    for texts, r in zip(requests, responses, strict=True):
        assert r.status_code == 200, r.text
        _same(r.json(), expected[at:at + len(texts)])
        at += len(texts)
    coalesced = _scrape(server.url)[("flaxsent_batch_size_count", ())]
    assert coalesced < 256  # far fewer device batches than requests


def test_metrics_count_what_was_sent(server, client, ref):
    before = _scrape(server.url)
    for _ in range(3):
        client.post("/score", json={"input_data": CARD})
    client.post("/predict", json={"inputs": [["a"], ["b"], ["c"]]})
    client.post("/score", json={"input_data": []})
    httpx.post(f"{server.url}/score", json={"input_data": CARD})  # no key
    after = _scrape(server.url)

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert delta("flaxsent_requests_total", route="/score", status="200") == 3
    assert delta("flaxsent_requests_total", route="/predict", status="200") == 1
    assert delta("flaxsent_requests_total", route="/score", status="400") == 1
    assert delta("flaxsent_requests_total", route="/score", status="401") == 1
    assert delta("flaxsent_inputs_total") == 3 * len(CARD) + 3
    assert delta("flaxsent_request_duration_seconds_count", route="/score") == 5
    assert delta("flaxsent_queue_duration_seconds_count") == 4
    assert after[("flaxsent_compiled_shapes", ())] == len(client.get("/info").json()["shapes"])
    assert after[("flaxsent_ready", ())] == 1
    assert after[("flaxsent_requests_in_flight", ())] == 0


# ---- limits and shutdown, each on a server of its own --------------------------------------

def test_429_over_the_limit_then_sigterm_finishes_every_request_in_flight_and_exits_0(
        tiny_flax, tmp_path, ref):
    """One server for both (a start is the slow part): requests wait up to 5 s for company, so
    the first 8 are in flight when the rest come (429), and when SIGTERM arrives."""
    with serving(tiny_flax, tmp_path, "--max-concurrent-requests", "8", "--max-wait-ms", "5000",
                 "--api-key", KEY) as s:
        requests = _random_requests(11, seed=5)
        results = []
        sender = threading.Thread(target=lambda: results.extend(asyncio.run(
            _post_all(s.url, [{"input_data": t} for t in requests], headers=AUTH))))
        sender.start()
        deadline = time.monotonic() + 60
        while _scrape(s.url)[("flaxsent_requests_in_flight", ())] < 8:
            assert time.monotonic() < deadline and sender.is_alive()
            time.sleep(0.05)
        s.proc.send_signal(signal.SIGTERM)
        sender.join(120)
        assert s.proc.wait(120) == 0, s.log.read_text()
    assert sorted(r.status_code for r in results) == [200] * 8 + [429] * 3
    for texts, r in zip(requests, results, strict=True):
        if r.status_code == 429:
            assert r.json()["error_type"] == "Overloaded" and "limit" in r.json()["error"]
        else:
            _same(r.json(), ref(texts))
    assert "draining" in s.log.read_text()


# ---- in-process: warming up, draining, non-finite scores -----------------------------------

def test_503_while_warming_up_and_while_draining(tiny_flax, tmp_path):
    clf = Classifier.from_pretrained(tiny_flax, cache_dir=tmp_path, max_batch_tokens=256)
    release = threading.Event()
    warmup = clf.warmup
    clf.warmup = lambda: (release.wait(60), warmup())
    app = create_app(clf, ServeOptions())
    with TestClient(app) as c:
        for r in (c.get("/health"), c.post("/score", json={"input_data": ["a"]})):
            assert r.status_code == 503
            assert r.json() == {"error": "the model is warming up (compiling its shapes)",
                                "error_type": "Unhealthy"}
        release.set()
        assert app.state.service.batcher.wait_ready(60)
        assert c.get("/health").status_code == 200
        assert c.post("/score", json={"input_data": ["a"]}).status_code == 200
        app.state.service.drain()
        for r in (c.get("/health"), c.post("/predict", json={"inputs": "a"})):
            assert r.status_code == 503 and "shutting down" in r.json()["error"]


def test_a_non_finite_score_is_424(tiny_flax, tmp_path):
    folder = tmp_path / "nan"
    shutil.copytree(tiny_flax, folder)
    weights = load_file(folder / "flax_model.safetensors")
    weights["classifier/bias"] = np.full_like(weights["classifier/bias"], np.nan)
    save_file(weights, folder / "flax_model.safetensors")
    clf = Classifier.from_pretrained(folder, cache_dir=tmp_path / "cache", max_batch_tokens=256)
    with TestClient(create_app(clf, ServeOptions())) as c:
        assert c.app.state.service.batcher.wait_ready(60)
        r = c.post("/score", json={"input_data": ["fine", "also fine"]})
        assert r.status_code == 424 and r.json()["error_type"] == "Backend"
        assert r.json()["error"] == ("input_data[0]: the model gave a non-finite score (logits "
                                     "[nan, nan]); 2 input(s) affected")
        r = c.post("/predict", json={"inputs": "x"})
        assert r.status_code == 424 and r.json()["error"].startswith("inputs: ")


# ---- the command line ------------------------------------------------------------------------

def _one_line_error(capsys, *argv):
    capsys.readouterr()
    code = main(["serve", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_bad_options_are_one_line_errors(capsys, tiny_flax):
    assert "--max-wait-ms -1.0: must be from 0 to 10000" in _one_line_error(
        capsys, str(tiny_flax), "--max-wait-ms", "-1")
    assert "--max-client-batch-size 0: must be a positive integer" in _one_line_error(
        capsys, str(tiny_flax), "--max-client-batch-size", "0")
    assert "--port 70000" in _one_line_error(capsys, str(tiny_flax), "--port", "70000")
    for timeout in ("0", "nan", "inf"):
        assert "--body-timeout-s" in _one_line_error(capsys, str(tiny_flax), "--body-timeout-s",
                                                     timeout)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert f"cannot listen on 127.0.0.1:{port}" in _one_line_error(
            capsys, str(tiny_flax), "--port", str(port))


def test_the_card_example_is_documented_as_curl():
    page = (ROOT / "docs" / "serving.md").read_text(encoding="utf-8")
    call = re.search(r"curl .*?/score.*?-d '(.*?)'", page, re.S)
    assert call and json.loads(call.group(1)) == {"input_data": CARD}
