"""The serving bench's load: server processes on free local ports, and closed-loop HTTP clients.

Each of C clients (asyncio + httpx, one connection each) sends a request, waits for its answer,
and sends the next. Requests that complete in the measured window count: the window opens after
a warm-up and closes once it is `duration_s` long and holds `min_requests` answers (so slow
servers under many clients still get several round trips per client), or at `max_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

_LISTENING = re.compile(r"listening on (http://\S+)")


@dataclasses.dataclass
class RunningServer:
    """A server process the bench (or a test) started, and where it listens."""

    url: str
    proc: subprocess.Popen
    log: Path
    startup_s: float  # process start to /health 200


@contextlib.contextmanager
def server_process(argv: Sequence[str], log: Path, env: dict[str, str] | None = None,
                   timeout_s: float = 600) -> Iterator[RunningServer]:
    """Start a server that logs 'listening on URL'; yield it once GET /health answers 200;
    stop it with SIGTERM on exit (SIGKILL after a minute)."""
    start = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})
    try:
        url = None
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited with {proc.returncode}:\n"
                                   f"{log.read_text(errors='replace')[-3000:]}")
            if time.perf_counter() - start > timeout_s:
                raise RuntimeError(f"no healthy server after {timeout_s:.0f} s; see {log}")
            if url is None:
                found = _LISTENING.search(log.read_text(errors="replace"))
                url = found.group(1) if found else None
            if url is not None:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/health", timeout=10).status_code == 200:
                        break
            time.sleep(0.1)
        yield RunningServer(url, proc, log, time.perf_counter() - start)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclasses.dataclass
class _Done:
    start: float
    end: float
    sentences: int
    ok: bool


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50, p95, p99, mean and max of `values` (None for each when there are none)."""
    if not values:
        return dict.fromkeys(("p50", "p95", "p99", "mean", "max"))
    a = np.asarray(values, np.float64)
    p50, p95, p99 = np.percentile(a, [50, 95, 99]).tolist()
    return {"p50": p50, "p95": p95, "p99": p99, "mean": float(a.mean()), "max": float(a.max())}


async def _level(url: str, next_request: Callable[[], list[str]], clients: int, warmup_s: float,
                 duration_s: float, min_requests: int, max_s: float,
                 headers: dict[str, str] | None) -> dict[str, Any]:
    done: list[_Done] = []
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, headers=headers,
                                 timeout=httpx.Timeout(max_s + 60)) as client:
        begin = time.perf_counter()
        opens = begin + warmup_s
        in_window = 0

        async def one_client() -> None:
            nonlocal in_window
            while not stop.is_set():
                texts = next_request()
                start = time.perf_counter()
                try:
                    r = await client.post("/score", json={"input_data": texts})
                    ok = r.status_code == 200 and len(r.json()) == len(texts)
                except (httpx.HTTPError, ValueError):
                    ok = False
                end = time.perf_counter()
                done.append(_Done(start, end, len(texts), ok))
                in_window += end >= opens

        tasks = [asyncio.create_task(one_client()) for _ in range(clients)]
        while True:
            await asyncio.sleep(0.05)
            now = time.perf_counter()
            if (now - opens >= duration_s and in_window >= min_requests) or now - begin >= max_s:
                break
        closes = now
        stop.set()
        await asyncio.wait(tasks)  # let the requests in flight finish (they are not counted)
    counted = [d for d in done if opens <= d.end <= closes]
    good = [d for d in counted if d.ok]
    window = closes - opens
    sentences = sum(d.sentences for d in good)
    return {"clients": clients, "window_s": window, "requests": len(good),
            "errors": len(counted) - len(good), "sentences": sentences,
            "sentences_per_s": sentences / window if window > 0 else None,
            "requests_per_s": len(good) / window if window > 0 else None,
            "latency_ms": percentiles([1000 * (d.end - d.start) for d in good]),
            "hit_max_s": closes - begin >= max_s}


def run_level(url: str, next_request: Callable[[], list[str]], clients: int, *,
              warmup_s: float, duration_s: float, min_requests: int, max_s: float,
              headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Closed-loop load from `clients` clients; throughput and latency of the window."""
    if clients < 1:
        raise ValueError(f"clients must be >= 1, got {clients}")
    cpu, wall = time.process_time(), time.perf_counter()
    level = asyncio.run(_level(url, next_request, clients, warmup_s, duration_s, min_requests,
                               max_s, headers))
    # the load generator shares the machine with the server: how much of it did it take?
    level["client_cpu_share"] = (time.process_time() - cpu) / (
        (time.perf_counter() - wall) * (os.cpu_count() or 1))
    return level
