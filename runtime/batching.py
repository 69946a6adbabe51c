"""The batching front: one queue and a bounded pool of workers shared by every caller of a runtime.

Callers submit validated problems and get a Future. Short problems wait in per-shape buckets
until a bucket holds a full batch (`max_batch_cells`) or its oldest problem has waited
`max_wait_ms`; then a worker takes them as one RowJob. Problems from many requests share a batch,
which is where an engine's throughput comes from. A long problem becomes a TapeJob whose chunks
workers run side by side. Every result goes to its request as soon as its own job delivers it, so a
short request never waits for a long one.

Scheduling, in order: a due bucket of fresh short problems; then resumed work (a RowJob that used
its time slice, a tape's chunks), first come first served. To keep long work moving under a flood
of short requests, when long work waits and no worker is on it, the next free worker takes it.

Backpressure: `max_queue_cells` bounds the cells of accepted, unfinished problems. A request that
would pass it is refused at once with QueueFull, unless the queue is empty (so any one request can
run). Workers: `engine.workers` threads (CPU: one per core), never more.
"""
from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Callable, NamedTuple

from .engines.protocol import Engine
from .errors import QueueFull, RuntimeClosed, SeadError
from .loop import Chunk, Limits, Result, RowJob, TapeJob, bucket_shape
from .tasks import Parsed

SLICE_SECONDS = 0.02  # a RowJob yields its worker after this long, so others get a turn
MIN_BATCH_CELLS = 1 << 12  # when splitting a bucket across idle workers, no batch smaller than this


class _Request:
    """One submit(): its results in input order and the Future that gets them. The caller may
    cancel the Future (a client that left): its waiting problems are dropped and its jobs stop
    at their next engine call."""

    def __init__(self, size: int, cells: int):
        self.results: list[Result | None] = [None] * size
        self.remaining, self.cells = size, cells
        self.future: Future = Future()

    @property
    def dropped(self) -> bool:
        return self.future.cancelled()


class _Waiting(NamedTuple):
    request: _Request
    index: int
    problem: Parsed
    limits: Limits
    since: float


class _Rows(NamedTuple):
    """A RowJob's next time slice."""

    job: RowJob
    requests: frozenset
    resumed: bool

    def run(self) -> list:
        if all(r.dropped for r in self.requests):  # every caller left: stop between engine calls
            self.job.abandon()
            return []
        return [] if self.job.run(time.perf_counter() + SLICE_SECONDS) else [self._replace(resumed=True)]


class _TapeWork(NamedTuple):
    """A long tape's start (chunk None) or one of its chunks."""

    job: TapeJob
    requests: frozenset
    chunk: Chunk | None
    resumed: bool = True

    def run(self) -> list:
        if self.job.failed:
            return []
        if all(r.dropped for r in self.requests):
            self.job.failed = True  # its other chunks are dropped too
            return []
        chunks = self.job.start() if self.chunk is None else self.job.run_chunk(self.chunk)
        return [self._replace(chunk=c) for c in chunks]


class Scheduler:
    def __init__(self, engine: Engine, task, state_channels: int, *, max_batch_cells: int, max_batch_rows: int,
                 max_wait_ms: float, max_queue_cells: int, tile_from: int, tile: tuple[int, int],
                 workers: int | None = None, state_code: str = "sign"):
        self.engine, self.task, self.state_channels, self.state_code = engine, task, state_channels, state_code
        self.max_batch_cells, self.max_batch_rows = max_batch_cells, max_batch_rows
        self.max_wait, self.max_queue_cells = max_wait_ms / 1000, max_queue_cells
        self.ring = task.boundary == "ring"
        # tapes longer than this run in tiles; shorter ones as whole rows (which must fit the engine).
        # Grids always run as whole rows (tiles are 1-D).
        self.tile_from = min(tile_from, engine.max_row_cells // 2) if task.rank == 1 else None
        self.tile = tile  # (cells per tile, tiles per row at most)
        self.cond = threading.Condition()
        self.buckets: dict[tuple[int, ...], deque[_Waiting]] = {}  # by a row's padded cell shape
        self.bucket_cells: dict[tuple[int, ...], int] = {}
        self.bucket_rows: dict[tuple[int, ...], int] = {}  # a bucket's planned rows per batch
        self.ready: list = []  # heap of (seq, work): resumed RowJobs, tape starts and chunks
        self.seq = itertools.count()
        self.tapes: set[TapeJob] = set()
        self.queued_cells = self.queued_problems = 0
        self.running = self.running_resumed = 0  # workers busy; of those, on resumed work
        self.closed = self.cancelled = False
        self.listeners: list[Callable[[int, int], None]] = []
        # cell_updates: cells x steps of the problems solved; tile_cell_steps: cells x steps the engine
        # ran for tiled tapes (halos included), which is what skipping inactive tiles saves on
        self.counters = {"batches": 0, "problems_solved": 0, "cell_updates": 0, "tile_cell_steps": 0}
        self.threads = [threading.Thread(target=self._work, name=f"sead-worker-{i}", daemon=True)
                        for i in range(workers or engine.workers)]
        for t in self.threads:
            t.start()

    # -- callers -------------------------------------------------------------------------------
    def submit(self, problems: list[Parsed], limits: list[Limits]) -> Future:
        cells = sum(p.length for p in problems)
        request = _Request(len(problems), cells)
        if not problems:
            request.future.set_result([])
            return request.future
        # sort into tapes and buckets before taking the lock, which the workers wait on
        tapes, buckets, shapes, now = [], {}, {}, time.perf_counter()
        for i, (p, lim) in enumerate(zip(problems, limits)):
            if self.tile_from is not None and p.length > self.tile_from:
                tapes.append((i, p, lim))
                continue
            key = p.shape or p.length  # what task.shape(p) is made of
            shape = shapes.get(key) or shapes.setdefault(key, bucket_shape(self.task, p))
            buckets.setdefault(shape, []).append(_Waiting(request, i, p, lim, now))
        if self.tile_from is None and buckets and max(map(math.prod, buckets)) > self.engine.max_row_cells:
            raise SeadError(f"a grid of {max(map(math.prod, buckets)):,} cells (padded) is more than engine "
                            f"'{self.engine.name}' takes in one row ({self.engine.max_row_cells:,})")
        with self.cond:
            if self.closed:
                raise RuntimeClosed("the runtime is closed")
            if self.queued_cells and self.queued_cells + cells > self.max_queue_cells:
                raise QueueFull(f"the queue holds {self.queued_cells:,} cells; {cells:,} more would pass "
                                f"max_queue_cells={self.max_queue_cells:,}")
            self.queued_cells += cells
            self.queued_problems += len(problems)
            request.future.add_done_callback(lambda f, r=request: self._on_cancel(r) if f.cancelled() else None)
            for i, p, lim in tapes:
                tape = TapeJob(self.engine, self.task, p, lim, None, self.ring, self.state_channels, *self.tile,
                               state_code=self.state_code)
                tape.deliver = self._deliverer(request, i, p.length, tape)
                self.tapes.add(tape)
                self._push(_TapeWork(tape, frozenset([request]), None))
            for shape, members in buckets.items():
                self.buckets.setdefault(shape, deque()).extend(members)
                self.bucket_cells[shape] = self.bucket_cells.get(shape, 0) + len(members) * math.prod(shape)
                self.bucket_rows.pop(shape, None)  # more problems: the next take plans the cut again
            self.cond.notify_all()
        return request.future

    def close(self, cancel: bool = False) -> None:
        """Finish everything submitted, then stop the workers. cancel: drop what has not started
        (its requests fail with RuntimeClosed) and stop at the end of each running time slice."""
        with self.cond:
            self.closed = True
            self.cancelled = cancel
            dropped = set()
            if cancel:
                dropped = {w.request for q in self.buckets.values() for w in q}
                dropped |= {r for _, work in self.ready for r in work.requests}
                self.buckets.clear()
                self.bucket_cells.clear()
                self.bucket_rows.clear()
                self.ready.clear()
            self.cond.notify_all()
        self._fail(dropped, RuntimeClosed("the runtime was closed before this request finished"))
        for t in self.threads:
            t.join()

    def stats(self) -> dict:
        with self.cond:
            waiting = sum(len(q) for q in self.buckets.values())
            return {"queued_cells": self.queued_cells, "queued_problems": self.queued_problems,
                    "in_flight_problems": self.queued_problems - waiting, **self.counters}

    def progress(self) -> list[dict]:
        """Steps and active tiles of each long tape in flight."""
        with self.cond:
            tapes = list(self.tapes)
        return [t.progress() for t in tapes]

    # -- delivery --------------------------------------------------------------------------------
    def _deliver(self, done: list[tuple[_Request, int, int, Result]], tape: TapeJob | None = None) -> None:
        """Record finished problems, (request, index, cells, result) each, under one acquisition
        of the lock, and complete the requests they finish."""
        finished, cells_done, updates = [], 0, 0
        with self.cond:
            for request, index, cells, result in done:
                if request.dropped:
                    continue
                cells_done += cells
                updates += cells * result.steps
                request.results[index] = result
                request.remaining -= 1
                if request.remaining == 0:
                    finished.append(request)
            self.queued_cells -= cells_done
            self.queued_problems -= len(done) - sum(r.dropped for r, *_ in done)
            self.counters["cell_updates"] += updates
            self.counters["problems_solved"] += len(done)
            if tape is not None:
                self.counters["tile_cell_steps"] += tape.cell_steps
                self.tapes.discard(tape)
        for request in finished:
            if request.future.set_running_or_notify_cancel():  # False: cancelled meanwhile
                request.future.set_result(request.results)

    def _deliverer(self, request: _Request, index: int, cells: int, tape: TapeJob):
        """A long tape's delivery: its one result."""
        return lambda result: self._deliver([(request, index, cells, result)], tape)

    def _row_deliverer(self, waiting: list[_Waiting]):
        """A RowJob's delivery: the (item, result) pairs of one retirement, together."""
        return lambda pairs: self._deliver([(waiting[i].request, waiting[i].index, waiting[i].problem.length, result)
                                            for i, result in pairs])

    def _on_cancel(self, request: _Request) -> None:
        """The caller cancelled: free its share of the queue; its waiting problems are skipped."""
        with self.cond:
            if request.remaining > 0:
                self.queued_cells -= request.cells
                self.queued_problems -= request.remaining
                request.remaining = 0
            self.cond.notify_all()

    def _fail(self, requests, exc: BaseException) -> None:
        with self.cond:
            failed = [r for r in requests if r.remaining > 0 and not r.dropped]
            for r in failed:  # nothing more comes for it: free its share of the queue
                self.queued_cells -= r.cells
                self.queued_problems -= r.remaining
                r.remaining = 0
        for r in failed:
            if r.future.set_running_or_notify_cancel():
                r.future.set_exception(exc)

    # -- workers ---------------------------------------------------------------------------------
    def _push(self, work) -> None:
        heapq.heappush(self.ready, (next(self.seq), work))

    def _next(self):
        """Under the lock: the next work, waiting for it. None once closed and drained."""
        while True:
            now = time.perf_counter()
            starved = bool(self.ready) and self.running_resumed == 0  # long work waits and nobody is on it
            shape, wait = self._due_bucket(now)
            if shape is not None and not starved:
                work = self._take(shape)
                if work is None:
                    continue
                return work
            if self.ready:
                return heapq.heappop(self.ready)[1]
            if shape is not None:
                work = self._take(shape)
                if work is None:
                    continue
                return work
            if self.closed and not self.buckets and self.running == 0:
                return None
            self.cond.wait(wait)

    def _due_bucket(self, now: float):
        """-> (shape of the due bucket with the oldest problem or None, seconds until one is due or None)."""
        best, oldest, next_due = None, math.inf, None
        for shape, queue in self.buckets.items():
            since = queue[0].since
            if self.closed or self.bucket_cells[shape] >= self.max_batch_cells or now - since >= self.max_wait:
                if since < oldest:
                    best, oldest = shape, since
            else:
                due = since + self.max_wait - now
                next_due = due if next_due is None else min(next_due, due)
        return best, next_due

    def _take(self, shape: tuple[int, ...]) -> _Rows:
        queue, length = self.buckets[shape], math.prod(shape)  # length: cells per row
        rows = self.bucket_rows.get(shape)
        if rows is None:
            # cut the bucket into equal batches, as many as the workers or a multiple of them, so
            # that no worker is left with a small remainder while the others idle; the cut holds
            # until problems arrive or the bucket empties (planned at every take, the batches of
            # one request shrank one by one)
            most = min(self.max_batch_rows, self.engine.max_rows(length), max(1, self.max_batch_cells // length))
            workers = len(self.threads)
            batches = workers * -(-len(queue) // (most * workers))
            rows = self.bucket_rows[shape] = min(most, max(-(-len(queue) // batches), MIN_BATCH_CELLS // length, 1))
        rows = min(rows, len(queue))
        waiting = [queue.popleft() for _ in range(rows)]
        if queue:
            self.bucket_cells[shape] -= rows * length
        else:
            del self.buckets[shape], self.bucket_cells[shape], self.bucket_rows[shape]
        waiting = [w for w in waiting if not w.request.dropped]  # cancelled callers' problems leave here
        if not waiting:
            return None
        rows = len(waiting)
        items = [(w.problem, w.limits) for w in waiting]
        self.counters["batches"] += 1
        for listener in self.listeners:
            listener(rows, rows * length)
        return _Rows(RowJob(self.engine, self.task, items, self._row_deliverer(waiting), shape, wrap=self.ring,
                            state_channels=self.state_channels),
                     frozenset(w.request for w in waiting), False)

    def _work(self) -> None:
        while True:
            with self.cond:
                work = self._next()
                if work is None:
                    return
                self.running += 1
                self.running_resumed += work.resumed
            follow = []
            try:
                follow = work.run()
            except BaseException as exc:  # the engine or a codec failed: the requests involved fail
                if isinstance(work.job, TapeJob):
                    work.job.failed = True
                    with self.cond:
                        self.tapes.discard(work.job)
                self._fail(work.requests, exc)
            with self.cond:
                self.running -= 1
                self.running_resumed -= work.resumed
                if not self.cancelled:
                    for item in follow:
                        self._push(item)
                self.cond.notify_all()
            if follow and self.cancelled:
                self._fail(work.requests, RuntimeClosed("the runtime was closed before this request finished"))
