"""The server's front door, before any parsing: the whole body read first (a size limit and a
deadline), then the API key, readiness and draining, and the concurrency limit (a pure ASGI
middleware); one JSON error shape for every answer that is not a result, 500 included; the
listening socket; and a uvicorn server whose SIGTERM drains and exits 0."""

from __future__ import annotations

import asyncio
import hmac
import logging
import socket
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flaxsent.errors import FlaxsentError
from flaxsent.serve.metrics import ServeMetrics

log = logging.getLogger("flaxsent")

# error kind -> status code: TEI's kinds, then the front door's own
STATUS = {"empty": 400, "validation": 422, "tokenizer": 422, "backend": 424, "overloaded": 429,
          "unhealthy": 503, "unauthorized": 401, "not_found": 404, "method_not_allowed": 405,
          "timeout": 408, "internal": 500}
# error kind -> the label TEI's te_request_failure{err} counts it under (others: uncounted)
FAILURES = {"empty": "validation", "validation": "validation", "tokenizer": "tokenization",
            "backend": "inference", "overloaded": "overloaded"}
# POST: limits and readiness apply
INFERENCE_ROUTES = frozenset({"/", "/score", "/predict", "/invocations"})
# GET: no API key needed (TEI's public routes: health at /, /ping and /health; its docs)
PUBLIC_ROUTES = frozenset({"/", "/health", "/ping", "/metrics", "/docs", "/openapi.json"})
KNOWN_ROUTES = INFERENCE_ROUTES | PUBLIC_ROUTES | {"/info", "/tokenize", "/decode"}
# Past --payload-limit, a body is still read (and dropped) up to this many more bytes, so that
# a client still sending it gets to read the 413 (closing on unread bytes resets the connection)
DRAIN_BYTES = 16 * 2**20


def error_type(kind: str) -> str:
    """A kind as TEI's ErrorType enum spells it on the wire: "Validation", and "NotFound" for the
    front door's own kinds."""
    return "".join(word.capitalize() for word in kind.split("_"))


class ApiError(Exception):
    """An error the client gets as `{"error": message, "error_type": Kind}`; `failure` is its
    te_request_failure label where TEI's differs from the kind's (e.g. batch_size)."""

    def __init__(self, kind: str, message: str, status: int | None = None,
                 failure: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.kind = kind
        self.status = status or STATUS[kind]
        self.failure = failure or FAILURES.get(kind)
        self.headers = headers or {}

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        """The JSON error response."""
        return JSONResponse({"error": str(self), "error_type": error_type(self.kind)},
                            status_code=self.status, headers={**self.headers, **(headers or {})})


class ClientLeft(Exception):
    """The client disconnected before its request's body was complete: nobody to answer."""


def http_error(request: Request, exc: HTTPException) -> ApiError:
    """Starlette's and FastAPI's own errors in the one shape: 404, 405, and a body that FastAPI
    cannot parse (not UTF-8, nested too deep: 422 as any other body that is not JSON)."""
    where = f"{request.method} {request.url.path[:200]}"
    if exc.status_code == 404:
        return ApiError("not_found", f"{where}: no such route (GET /openapi.json lists them)")
    if exc.status_code == 405:
        allowed = Headers(headers=exc.headers).get("allow", "?")
        return ApiError("method_not_allowed", f"{where}: method not allowed (allowed: "
                        f"{allowed})", headers=exc.headers)
    if exc.status_code == 400 and exc.__cause__ is not None:  # FastAPI's "error parsing the body"
        cause = exc.__cause__
        why = (f"it is not UTF-8 (byte {cause.start + 1})"
               if isinstance(cause, UnicodeDecodeError) else
               "it is nested too deeply" if isinstance(cause, RecursionError) else
               str(cause).split(";")[0])  # Python's advice after ';' is for the server
        return ApiError("validation", f"the body is not valid JSON: {why}")
    kind = "internal" if exc.status_code >= 500 else "validation"
    return ApiError(kind, str(exc.detail), status=exc.status_code, headers=exc.headers)


def add_error_handlers(app: FastAPI) -> None:
    """Every error the routes or the framework raise, answered as `{"error", "error_type"}`."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return http_error(request, exc).response()


def _one_line(exc: BaseException) -> str:
    """An exception as one log line: its type, message and innermost frame."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}{where}"


class GateState(Protocol):
    """What the gate reads and updates on the service."""

    in_flight: int
    metrics: ServeMetrics

    def unavailable(self) -> ApiError | None: ...


class Gate:
    """Pure ASGI middleware, the front door: reads the whole body first, then refuses early and
    cheaply; answers whatever escapes the app as a JSON 500 with one log line; counts every
    request by status, and clients that left mid-body apart."""

    def __init__(self, app: ASGIApp, *, service: GateState, api_key: str | None,
                 max_concurrent_requests: int, payload_limit: int, body_timeout_s: float):
        self.app = app
        self.service = service
        self._expected = f"Bearer {api_key}".encode() if api_key else None
        self._max_concurrent = max_concurrent_requests
        self._limit = payload_limit
        self._body_timeout = body_timeout_s

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

        metrics = self.service.metrics
        try:
            await self._handle(scope, receive, counted_send, path)
        except ClientLeft:
            metrics.disconnects.labels(route).inc()
            return
        except Exception as e:  # noqa: BLE001 - a bug answers a JSON 500, never a traceback
            log.error("flaxsent serve: %s %s: internal error: %s", scope["method"], path[:200],
                      _one_line(e))
            if not status:
                error = ApiError("internal", "internal server error (the server's log has it)")
                await error.response()(scope, receive, counted_send)
        metrics.requests.labels(route, str(status[0] if status else 500)).inc()
        metrics.request_duration.labels(route).observe(time.perf_counter() - started)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        headers = dict(scope["headers"])
        try:
            body = await self._read_body(headers, receive)
        except ApiError as error:  # 408, 413: answered, then the connection is closed
            await error.response({"connection": "close"})(scope, receive, send)
            return
        inference = scope["method"] == "POST" and path in INFERENCE_ROUTES
        public = scope["method"] in ("GET", "HEAD") and path in PUBLIC_ROUTES
        error = self._refusal(headers, public, inference)
        if error is not None:
            if inference and error.failure:
                self.service.metrics.te_failure.inc(error.failure)
            await error.response()(scope, receive, send)
            return
        if inference:  # a slot, taken only now that the body is here
            self.service.in_flight += 1
        try:
            await self.app(scope, _replay(body, receive), send)
        finally:
            if inference:
                self.service.in_flight -= 1

    def _refusal(self, headers: dict[bytes, bytes], public: bool, inference: bool
                 ) -> ApiError | None:
        """401 for a missing or wrong key; for inference, 503 (not ready, draining) or 429."""
        if self._expected is not None and not public and not hmac.compare_digest(
                headers.get(b"authorization", b""), self._expected):
            return ApiError("unauthorized", "missing or wrong API key: send the header "
                            "'Authorization: Bearer KEY'", headers={"www-authenticate": "Bearer"})
        if not inference:
            return None
        error = self.service.unavailable()
        if error is None and self.service.in_flight >= self._max_concurrent:
            error = ApiError("overloaded", f"model is overloaded: {self.service.in_flight} "
                             "requests in flight, the limit (--max-concurrent-requests) is "
                             f"{self._max_concurrent}")
        return error

    async def _read_body(self, headers: dict[bytes, bytes], receive: Receive) -> bytes:
        """The whole body, within --payload-limit bytes and --body-timeout-s seconds; ApiError 413
        or 408 instead (a body over the limit is read to its end and dropped, up to DRAIN_BYTES
        more); ClientLeft if the client disconnects first."""
        too_large = ApiError("validation", f"the body is over the payload limit of {self._limit} "
                             "bytes (--payload-limit)", status=413)
        declared = headers.get(b"content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > self._limit and (
                int(declared) > self._limit + DRAIN_BYTES
                or headers.get(b"expect", b"").lower() == b"100-continue"):
            raise too_large  # too much to drain, or nothing sent yet (it waits for a 100)
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self._body_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise ClientLeft
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size <= self._limit:
                        chunks.append(chunk)
                    elif size > self._limit + DRAIN_BYTES:
                        break
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            if size <= self._limit:
                raise ApiError("timeout", f"the body did not arrive within {self._body_timeout:g}"
                               " s (--body-timeout-s)") from None
        if size > self._limit:
            raise too_large
        return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive callable that gives the app the body read already, then the server's events."""
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
