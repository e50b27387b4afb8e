"""The server's front door against a real `flaxsent serve` (uvicorn) and raw sockets: one error
shape for the framework's own errors, a body deadline (408) with slots taken only once a body is
complete, a 413 a client still sending can read, disconnects counted apart; and a JSON 500 with
one log line for a bug."""

import http.client
import json
import logging
import socket
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from flaxsent import Classifier
from flaxsent.serve.app import ServeOptions, create_app
from flaxsent.serve.http import STATUS, error_type
from tests.helpers import serving
from tests.serve.test_app import _scrape

KIND = {error_type(kind): kind for kind in STATUS}  # "NotFound" -> "not_found"

TIMEOUT_S = 2  # --body-timeout-s of the server under test
STALLED = 4  # connections that stall mid-body: twice --max-concurrent-requests


@pytest.fixture(scope="module")
def server(tiny_flax, tmp_path_factory):
    with serving(tiny_flax, tmp_path_factory.mktemp("front-door"), "--max-batch-tokens", "256",
                 "--max-concurrent-requests", str(STALLED // 2),
                 "--body-timeout-s", str(TIMEOUT_S)) as s:
        yield s


def _open(url: str, head: bytes) -> socket.socket:
    """A raw connection to the server that has sent `head` (request line, headers, body bytes)."""
    address = urlsplit(url)
    sock = socket.create_connection((address.hostname, address.port), timeout=30)
    sock.sendall(head)
    return sock


def _post_head(path: str, length: int, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n").encode() + body


def _answer(sock: socket.socket) -> tuple[int, dict]:
    """The status and JSON body of the response on a raw connection."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, json.loads(response.read())


def _documented(status: int, body: dict) -> bool:
    """The one error shape, with the kind the docs give for that status."""
    return set(body) == {"error", "error_type"} and isinstance(body["error"], str) and \
        (STATUS.get(KIND.get(body["error_type"])) == status
         or (status, body["error_type"]) == (413, "Validation"))


FRAMEWORK_ERRORS = [
    ("POST", "/score", b'{"input_data": ["\xff\xfe"]}', 422, "validation", "not UTF-8"),
    ("POST", "/score", b"[" * 200_000 + b"]" * 200_000, 422, "validation", "nested too deeply"),
    ("POST", "/predict", b'{"inputs": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", 422,
     "validation", "nested too deeply"),
    ("GET", "/nowhere", b"", 404, "not_found", "GET /nowhere: no such route"),
    ("GET", "/score", b"", 405, "method_not_allowed", "allowed: POST"),
    ("PUT", "/info", b"{}", 405, "method_not_allowed", "allowed: GET"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "kind", "message"),
                         FRAMEWORK_ERRORS)
def test_the_frameworks_own_errors_have_the_one_error_shape(server, method, path, body, status,
                                                             kind, message):
    r = httpx.request(method, f"{server.url}{path}", content=body, timeout=60,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert _documented(status, r.json()) and r.json()["error_type"] == error_type(kind)
    assert message in r.json()["error"]


def test_stalled_bodies_take_no_slot_and_get_408_at_the_deadline(server):
    """A slowloris: connections that send one byte of their body and stall hold no concurrency
    slot (a real request still gets 200, not 429), and each is answered 408 and closed."""
    stalled = [_open(server.url, _post_head("/score", 100, b"{")) for _ in range(STALLED)]
    try:
        _scrape(server.url)  # one round trip: the server has seen the stalled requests
        r = httpx.post(f"{server.url}/score", json={"input_data": ["still served"]}, timeout=60)
        assert r.status_code == 200, r.text
        for sock in stalled:
            status, body = _answer(sock)
            assert (status, body) == (408, {
                "error": f"the body did not arrive within {TIMEOUT_S} s (--body-timeout-s)",
                "error_type": "Timeout"})
            assert sock.recv(1) == b""  # closed after the answer
    finally:
        for sock in stalled:
            sock.close()


def test_a_client_still_sending_an_oversized_body_reads_the_413(server):
    """urllib writes the whole body before it reads: the server drains it, then answers."""
    body = b'{"input_data": ["' + b"x" * 8_000_000 + b'"]}'  # 4x --payload-limit's default
    request = urllib.request.Request(f"{server.url}/score", data=body,
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=60)
    assert caught.value.code == 413
    assert json.loads(caught.value.read()) == {
        "error": "the body is over the payload limit of 2000000 bytes (--payload-limit)",
        "error_type": "Validation"}


def test_a_client_waiting_for_100_continue_gets_the_413_without_sending_its_body(server):
    head = _post_head("/score", 3_000_000, b"").replace(b"\r\n\r\n",
                                                        b"\r\nExpect: 100-continue\r\n\r\n")
    with _open(server.url, head) as sock:
        status, body = _answer(sock)
    assert status == 413 and body["error_type"] == "Validation"


def test_a_client_that_leaves_mid_body_is_counted_as_a_disconnect_not_a_5xx(server):
    before = _scrape(server.url)
    _open(server.url, _post_head("/score", 100, b'{"input_data": ')).close()
    key = ("flaxsent_client_disconnects_total", (("route", "/score"),))
    deadline = time.monotonic() + 30
    while (after := _scrape(server.url)).get(key, 0) == before.get(key, 0):
        assert time.monotonic() < deadline, "the disconnect was never counted"
        time.sleep(0.05)
    assert after[key] - before.get(key, 0) == 1
    answered = {dict(labels)["status"]: value - before.get((name, labels), 0)
                for (name, labels), value in after.items()
                if name == "flaxsent_requests_total" and dict(labels)["route"] == "/score"}
    assert not any(answered.values()), answered  # no 500 (nor any status) for nobody


def test_an_unexpected_exception_is_a_json_500_and_one_log_line(tiny_flax, tmp_path, caplog):
    clf = Classifier.from_pretrained(tiny_flax, cache_dir=tmp_path, max_batch_tokens=256)
    app = create_app(clf, ServeOptions())

    def broken():
        raise ZeroDivisionError("a bug\nover two lines")

    app.state.service.info = broken
    with caplog.at_level(logging.ERROR, logger="flaxsent"):
        r = TestClient(app).get("/info")  # no lifespan: /info needs no engine
    assert r.status_code == 500
    assert r.json() == {"error": "internal server error (the server's log has it)",
                        "error_type": "Internal"}
    [record] = caplog.records
    line = record.getMessage()
    assert "GET /info: internal error: ZeroDivisionError: a bug over two lines (at " in line
    assert "\n" not in line and record.exc_info is None
    assert _documented(500, r.json())
