"""The serving bench's baseline: transformers' `pipeline("text-classification")` behind FastAPI
on PyTorch, the way the model is commonly served today.

`python -m flaxsent.bench.pipeline_server MODEL --port 0` serves the card's contract
(POST /score `{"input_data": [...]}` -> `[{"label", "score"}]`) and GET /health. The endpoint
is a plain `def`, so FastAPI runs it in its thread pool; a lock lets one call use the model at a
time (concurrent PyTorch calls on the same cores only contend, and the fast tokenizer is not
safe to share between threads). The pipeline runs with its defaults (one text a forward).
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Sequence

from fastapi import FastAPI
from pydantic import BaseModel


class ScoreRequest(BaseModel):
    """The model card's request."""

    input_data: list[str]


def create_app(model: str) -> FastAPI:
    """A FastAPI app around one transformers pipeline on the CPU."""
    import transformers

    pipe = transformers.pipeline("text-classification", model=model, device="cpu")
    lock = threading.Lock()
    app = FastAPI()

    @app.post("/score")
    def score(body: ScoreRequest) -> list[dict]:
        with lock:
            return pipe(body.input_data)

    @app.get("/health")
    def health() -> dict:
        return {}

    return app


def main(argv: Sequence[str] | None = None) -> int:
    """Load the pipeline, listen on a port (0: any free one), serve until SIGTERM."""
    import uvicorn

    from flaxsent.serve.http import bind

    parser = argparse.ArgumentParser(prog="python -m flaxsent.bench.pipeline_server",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("model", help="HF PyTorch folder or Hub id")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args(argv)
    app = create_app(args.model)
    sock = bind(args.host, args.port)
    config = uvicorn.Config(app, access_log=False)
    address, port = sock.getsockname()[:2]
    logging.getLogger("uvicorn.error").info("pipeline server: listening on http://%s:%d",
                                            address, port)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
