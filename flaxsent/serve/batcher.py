"""Cross-request batching: one thread owns the engine and runs concurrent requests together.

Each request hands over its texts' token ids and gets a future. The engine thread takes the
oldest request, waits at most `max_wait_s` from that request's arrival for others, and adds
requests while the plan's packed batch still has room for their texts; then the group goes
through the steps of any stream over the engine (`classifier.dispatch`, `read_back`,
`check_finite`), and each request gets back its own rows in its own order, or the
`NonFiniteLogitsError` of its first non-finite row. Requests that queued while the device was
busy are taken without waiting; the next group is dispatched before the previous one's
results are read back, so host work overlaps device work. A group that needs few rows (a lone
request) runs at the fewest rows of the plan's rungs that hold it (`ShapePlan.fitted`), so low
load does not pay for a full batch.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future

import jax
import numpy as np

from flaxsent.core.classifier import Classifier, check_finite, dispatch, read_back
from flaxsent.core.plan import Batch, ShapePlan, pack_rows
from flaxsent.errors import NonFiniteLogitsError

log = logging.getLogger("flaxsent")

_STOP = object()  # the queue's last item: drain what came before, then end the thread
_WAKE = object()  # wakes a wait for company (hurry): dispatch what is taken now
# Packing a group is exact but costs Python time; below this share of the packed batch's
# tokens and slots, the group's texts are taken to fit without packing them.
_SURE_FIT = 0.875


class EngineError(RuntimeError):
    """The device run of a batch failed; every request in that batch gets this error."""


@dataclasses.dataclass
class RequestLogits:
    """One request's results: logits in its input order, and where its time went."""

    logits: np.ndarray  # [n, C] float32
    queue_s: float  # arrival to dispatch of its group
    inference_s: float  # dispatch to results on the host
    batch_texts: int  # texts of all requests run with it (itself included)


@dataclasses.dataclass
class _Job:
    ids: list[list[int]]  # token ids per text, [CLS] ... [SEP]
    future: Future
    arrived: float  # time.perf_counter()


@dataclasses.dataclass
class _Flight:
    """A dispatched group: its requests and batches (device arrays not yet read back)."""

    jobs: list[_Job]
    batches: list[tuple[Batch, jax.Array]]
    dispatched: float
    n_texts: int


class _Room:
    """Whether a group's texts still fit one packed batch of the plan (as plan.batches packs)."""

    def __init__(self, plan: ShapePlan):
        self._pack = plan.pack
        # without packing, each text takes a row of the smallest bucket (an estimate)
        self._rows = plan.pack.rows if plan.pack else plan.buckets[0].rows
        self._lengths: list[int] = []  # short texts' token counts

    def take(self, job: _Job) -> bool:
        """Add the job's texts if they fit (an empty group takes any job); False otherwise."""
        if self._pack is None:
            lengths = self._lengths + [1] * len(job.ids)
            fits = len(lengths) <= self._rows
        else:
            length = self._pack.length
            lengths = self._lengths + [len(ids) for ids in job.ids if len(ids) <= length]
            fits = self._fits(lengths)
        if fits or not self._lengths:
            self._lengths = lengths
            return True
        return False

    def _fits(self, lengths: list[int]) -> bool:
        pack = self._pack
        total = sum(lengths)
        if total > pack.tokens or len(lengths) > pack.rows * pack.slots:
            return False
        if total <= _SURE_FIT * pack.tokens and len(lengths) <= _SURE_FIT * pack.rows * pack.slots:
            return True
        return len(pack_rows(np.asarray(lengths), pack.length, pack.slots)) <= pack.rows


class Batcher:
    """The engine's one owner: warms every shape up, then runs queued requests in groups."""

    def __init__(self, clf: Classifier, max_wait_s: float = 0.002,
                 on_batch: Callable[[Batch], None] | None = None):
        """on_batch(batch): called on the engine thread for every batch read back."""
        if not max_wait_s >= 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s!r}")
        self._clf = clf
        self._max_wait = float(max_wait_s)
        self._on_batch = on_batch
        self._queue: queue.Queue = queue.Queue()
        self._carry: collections.deque[_Job] = collections.deque()  # taken, did not fit
        self._ready = threading.Event()
        self._hurry = threading.Event()  # draining: no more waiting for company
        self._stopping = False
        self._closed = False
        self._lock = threading.Lock()  # submit vs close
        self._warmup_error: str | None = None
        self._thread = threading.Thread(target=self._main, name="flaxsent-engine", daemon=True)

    # ---- public ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the engine thread: it compiles every shape first, then `ready` turns true."""
        self._thread.start()

    @property
    def ready(self) -> bool:
        """Every shape is compiled and requests are being served."""
        return self._ready.is_set()

    @property
    def warmup_error(self) -> str | None:
        """Why warm-up failed (the batcher then never becomes ready), or None."""
        return self._warmup_error

    @property
    def queued(self) -> int:
        """Requests waiting for the engine thread."""
        return self._queue.qsize() + len(self._carry)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until warm-up is done (True) or the timeout passes (False)."""
        return self._ready.wait(timeout)

    def submit(self, ids: Sequence[Sequence[int]]) -> Future:
        """Queue one request's token ids (each [CLS] ... [SEP], within the plan's max length);
        the future resolves to a `RequestLogits` with one logits row per text, in order, or
        raises the `NonFiniteLogitsError` of its first text (index within the request) with NaN
        or inf logits."""
        job = _Job([list(x) for x in ids], Future(), time.perf_counter())
        if not job.ids:
            job.future.set_result(RequestLogits(
                np.zeros((0, self._clf.config.num_labels), np.float32), 0.0, 0.0, 0))
            return job.future
        with self._lock:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._queue.put(job)
        return job.future

    def hurry(self) -> None:
        """Stop waiting for more requests before a dispatch (used while draining), the wait
        under way included."""
        self._hurry.set()
        self._queue.put(_WAKE)

    def close(self, timeout: float | None = None) -> None:
        """Refuse new requests, finish every queued one, and end the engine thread."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(_STOP)
        self._hurry.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ---- the engine thread -----------------------------------------------------------------

    def _main(self) -> None:
        start = time.perf_counter()
        try:
            self._clf.warmup()
        except Exception as e:  # noqa: BLE001 - reported through /health, not a crash
            self._warmup_error = f"warm-up failed: {type(e).__name__}: {e}"
            log.error("flaxsent serve: %s", self._warmup_error)
            self._fail_queued(EngineError(self._warmup_error))
            return
        log.info("flaxsent serve: ready: %d shape(s) compiled in %.1f s",
                 len(self._clf.compiled_shapes), time.perf_counter() - start)
        self._ready.set()
        previous: _Flight | None = None
        while True:
            if previous is not None and self._queue.empty() and not self._carry:
                self._finish(previous)  # nothing else to overlap it with
                previous = None
            group = self._next_group()
            current = self._dispatch(group) if group else None
            if previous is not None:
                self._finish(previous)
            previous = current
            if self._stopping and not self._carry:
                break
        if previous is not None:
            self._finish(previous)

    def _next_group(self) -> list[_Job]:
        """The oldest request and those that join it while one packed batch holds them; no
        jobs once the queue is closed and empty."""
        if self._carry:
            first = self._carry.popleft()
        elif self._stopping:
            return []
        else:
            first = self._queue.get()
            if first is _WAKE:
                return []
            if first is _STOP:
                self._stopping = True
                return []
        room = _Room(self._clf.plan)
        room.take(first)
        group = [first]
        deadline = first.arrived + self._max_wait
        while not self._stopping:
            wait = deadline - time.perf_counter()
            try:
                if wait > 0 and not self._hurry.is_set():
                    job = self._queue.get(timeout=wait)
                else:
                    job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is _WAKE:
                continue
            if job is _STOP:
                self._stopping = True
                break
            if not room.take(job):
                self._carry.append(job)
                break
            group.append(job)
        return group

    def _dispatch(self, group: list[_Job]) -> _Flight | None:
        """Send a group's batches to the device (asynchronously), each at the fewest rows that
        hold it; None if every request was cancelled."""
        jobs = [job for job in group if job.future.set_running_or_notify_cancel()]
        if not jobs:
            return None
        flat = [ids for job in jobs for ids in job.ids]
        start = time.perf_counter()
        try:
            batches = list(dispatch(self._clf.engine, self._clf.plan, enumerate(flat),
                                    self._clf.tokenizer.pad_id, window=len(flat)))
        except Exception as e:  # noqa: BLE001 - the requests fail, the server goes on
            self._fail(jobs, e)
            return None
        return _Flight(jobs, batches, start, len(flat))

    def _finish(self, flight: _Flight | None) -> None:
        """Read a group's logits back and resolve each request with its own rows."""
        if flight is None:
            return
        n_labels = self._clf.config.num_labels
        rows = np.full((flight.n_texts, n_labels), np.nan, np.float32)  # [N, C]
        try:
            for batch, out in flight.batches:
                rows[batch.positions] = read_back(batch, out)
                if self._on_batch is not None:
                    self._on_batch(batch)
        except Exception as e:  # noqa: BLE001
            self._fail(flight.jobs, e)
            return
        done = time.perf_counter()
        at = 0
        for job in flight.jobs:
            n = len(job.ids)
            mine = rows[at:at + n]
            at += n
            try:
                check_finite(mine)  # a row no batch filled stays NaN: it fails here too
            except NonFiniteLogitsError as e:
                job.future.set_exception(e)
                continue
            job.future.set_result(RequestLogits(mine, flight.dispatched - job.arrived,
                                                done - flight.dispatched, flight.n_texts))

    def _fail(self, jobs: list[_Job], error: Exception) -> None:
        log.error("flaxsent serve: a batch failed: %s: %s", type(error).__name__, error)
        for job in jobs:
            job.future.set_exception(EngineError(f"{type(error).__name__}: {error}"))

    def _fail_queued(self, error: Exception) -> None:
        """After a failed warm-up: fail what is queued, and every request after it."""
        with self._lock:
            self._closed = True
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(job, _Job) and job.future.set_running_or_notify_cancel():
                job.future.set_exception(error)
