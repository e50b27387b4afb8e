"""`flaxsent serve`: the model card's /score and TEI's routes over HTTP. The defaults are
`ServeOptions`' (and the listening address's, `flaxsent.serve.options`); the options are built
from the parsed arguments field by field."""

from __future__ import annotations

import argparse
import os
from typing import Any

from flaxsent.cli.common import (
    classifier_arguments,
    classifier_options,
    defaults_of,
    number,
    options_from,
)
from flaxsent.errors import FlaxsentError
from flaxsent.serve.options import HOST, PORT, ServeOptions

D = defaults_of(ServeOptions)
# what the server needs past the serve extra's own packages (a missing one: install the extra)
_EXTRA = ("fastapi", "starlette", "uvicorn", "prometheus_client", "pydantic")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "serve", help="HTTP server: the model card's /score and TEI's API (/predict, /, "
                      "/info, /health, /tokenize, /decode, /metrics)",
        description="Serve MODEL over HTTP. Concurrent requests are coalesced into the "
                    "engine's packed batches. SIGTERM: new requests get 503, requests in "
                    "flight finish, exit 0.")
    p.add_argument("model", help="converted flaxsent folder, HF folder or Hub id")
    p.add_argument("--host", default=HOST,
                   help=f"address to bind (default {HOST}: this machine only)")
    p.add_argument("--port", type=int, default=PORT,
                   help=f"TCP port (default {PORT}; 0: any free)")
    p.add_argument("--api-key", default=D.api_key,
                   help="require 'Authorization: Bearer KEY' on every route but the GETs of "
                        "/health, /, /ping, /metrics and the docs (or set FLAXSENT_API_KEY, "
                        "which keeps it out of `ps`)")
    p.add_argument("--max-batch-tokens", type=int, default=None,
                   help="tokens per device batch (default: the platform's budget)")
    p.add_argument("--max-wait-ms", type=float, default=D.max_wait_ms,
                   help="how long a request waits for others to share its batch "
                        f"(default {number(D.max_wait_ms)})")
    p.add_argument("--max-client-batch-size", type=int, default=D.max_client_batch_size,
                   help=f"most inputs in one request (default {D.max_client_batch_size}; "
                        "more: 422)")
    p.add_argument("--max-concurrent-requests", type=int, default=D.max_concurrent_requests,
                   help="most inference requests at once "
                        f"(default {D.max_concurrent_requests}; more: 429)")
    p.add_argument("--payload-limit", type=int, default=D.payload_limit,
                   help=f"largest request body in bytes (default {D.payload_limit}; more: 413)")
    p.add_argument("--body-timeout-s", type=float, default=D.body_timeout_s,
                   help="seconds a request's whole body may take to arrive "
                        f"(default {number(D.body_timeout_s)}; more: 408)")
    p.add_argument("--tokenization-workers", type=int, default=D.tokenization_workers,
                   help=f"threads tokenizing requests (default {D.tokenization_workers})")
    p.add_argument("--access-log", action="store_true", help="log every request")
    classifier_arguments(p)
    p.set_defaults(func=run)
    return p


def options(args: argparse.Namespace) -> ServeOptions:
    """The server's options: every field from its flag; the model's name is the model argument,
    and the API key falls back to FLAXSENT_API_KEY."""
    return options_from(ServeOptions, args, model_id=args.model,
                        api_key=args.api_key or os.environ.get("FLAXSENT_API_KEY") or None)


def run(args: argparse.Namespace) -> int:
    try:
        from flaxsent.serve.app import run_server
    except ModuleNotFoundError as e:
        if e.name not in _EXTRA:
            raise
        raise FlaxsentError(f"serving needs {e.name}: pip install 'flaxsent[serve]'") from None
    opts = options(args)
    extra = classifier_options(args)
    if args.max_batch_tokens is not None:
        extra["max_batch_tokens"] = args.max_batch_tokens
    return run_server(args.model, opts, host=args.host, port=args.port,
                      access_log=args.access_log, dtype=args.dtype, **extra)
