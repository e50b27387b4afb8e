"""The server's front door, before any parsing: API key, readiness and draining, the
concurrency limit and the body size limit (a pure ASGI middleware); JSON errors; the listening
socket; and a uvicorn server whose SIGTERM drains and exits 0."""

from __future__ import annotations

import hmac
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol

import uvicorn
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flaxsent.errors import FlaxsentError
from flaxsent.serve.metrics import ServeMetrics

# error_type -> status code, as TEI maps them
STATUS = {"empty": 400, "validation": 422, "tokenizer": 422, "backend": 424, "overloaded": 429,
          "unhealthy": 503}
# error kind -> the label TEI's te_request_failure{err} counts it under (unhealthy: uncounted)
FAILURES = {"empty": "validation", "validation": "validation", "tokenizer": "tokenization",
            "backend": "inference", "overloaded": "overloaded"}
# POST: limits and readiness apply
INFERENCE_ROUTES = frozenset({"/", "/score", "/predict", "/invocations"})
# GET: no API key needed (TEI's public routes: health at /, /ping and /health; its docs)
PUBLIC_ROUTES = frozenset({"/", "/health", "/ping", "/metrics", "/docs", "/openapi.json"})
KNOWN_ROUTES = INFERENCE_ROUTES | PUBLIC_ROUTES | {"/info", "/tokenize", "/decode"}


class ApiError(Exception):
    """An error the client gets as `{"error": message, "error_type": Kind}`; `failure` is its
    te_request_failure label where TEI's differs from the kind's (e.g. batch_size)."""

    def __init__(self, kind: str, message: str, status: int | None = None,
                 failure: str | None = None):
        super().__init__(message)
        self.kind = kind
        self.status = status or STATUS[kind]
        self.failure = failure or FAILURES.get(kind)

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        """The JSON error response; error_type as TEI's ErrorType enum spells it ("Validation")."""
        return JSONResponse({"error": str(self), "error_type": self.kind.capitalize()},
                            status_code=self.status, headers=headers)


class GateState(Protocol):
    """What the gate reads and updates on the service."""

    in_flight: int
    metrics: ServeMetrics

    def unavailable(self) -> ApiError | None: ...


class Gate:
    """Pure ASGI middleware: refuses early and cheaply, and counts every request by status."""

    def __init__(self, app: ASGIApp, *, service: GateState, api_key: str | None,
                 max_concurrent_requests: int, payload_limit: int):
        self.app = app
        self.service = service
        self._expected = f"Bearer {api_key}".encode() if api_key else None
        self._max_concurrent = max_concurrent_requests
        self._limit = payload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in KNOWN_ROUTES else "other"
        started = time.perf_counter()
        status: list[int] = []

        async def counted_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self._handle(scope, receive, counted_send, path)
        finally:
            metrics = self.service.metrics
            metrics.requests.labels(route, str(status[0] if status else 500)).inc()
            metrics.request_duration.labels(route).observe(time.perf_counter() - started)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        headers = dict(scope["headers"])
        public = scope["method"] in ("GET", "HEAD") and path in PUBLIC_ROUTES
        if self._expected is not None and not public and not hmac.compare_digest(
                headers.get(b"authorization", b""), self._expected):
            error = ApiError("unauthorized", "missing or wrong API key: send the header "
                             "'Authorization: Bearer KEY'", status=401)
            await error.response({"www-authenticate": "Bearer"})(scope, receive, send)
            return
        inference = scope["method"] == "POST" and path in INFERENCE_ROUTES
        if inference:
            error = self.service.unavailable()
            if error is None and self.service.in_flight >= self._max_concurrent:
                error = ApiError("overloaded", f"model is overloaded: {self.service.in_flight} "
                                 "requests in flight, the limit (--max-concurrent-requests) is "
                                 f"{self._max_concurrent}")
            if error is not None:
                if error.failure:
                    self.service.metrics.te_failure.inc(error.failure)
                await error.response()(scope, receive, send)
                return
            self.service.in_flight += 1
        try:
            replay = await self._read_body(scope, receive, send, headers)
            if replay is not None:
                await self.app(scope, replay, send)
        finally:
            if inference:
                self.service.in_flight -= 1

    async def _read_body(self, scope: Scope, receive: Receive, send: Send,
                         headers: dict[bytes, bytes]) -> Receive | None:
        """The whole body, read up to --payload-limit bytes, as a receive callable for the app;
        None once a 413 (or nothing, for a client that left) has been sent instead."""
        too_large = ApiError("validation", f"the body is over the payload limit of {self._limit} "
                             "bytes (--payload-limit)", status=413)
        declared = headers.get(b"content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > self._limit:
            await too_large.response()(scope, receive, send)
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._limit:
                await too_large.response()(scope, receive, send)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one), or a one-line error."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise FlaxsentError(f"--port {port!r}: must be from 0 to 65535")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise FlaxsentError(f"--host {host!r}: {e.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise FlaxsentError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


class DrainingServer(uvicorn.Server):
    """uvicorn's server, but SIGTERM/SIGINT first tell the app to drain (503 for new work),
    and the process ends with 0 once every request in flight is answered (uvicorn re-raises
    the signal after a graceful shutdown, which would end it with 143)."""

    def __init__(self, config: uvicorn.Config, on_drain: Callable[[], Any]):
        super().__init__(config)
        self._on_drain = on_drain

    def handle_exit(self, sig: int, frame: Any) -> None:
        self._on_drain()
        if self.should_exit:
            self.force_exit = True  # a second signal: stop waiting
        self.should_exit = True
