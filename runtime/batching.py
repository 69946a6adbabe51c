"""The batching front: one queue and a bounded pool of workers shared by every caller of a runtime.

Callers submit validated problems (runtime/tasks: Problems, arrays) and get a Future. Short
problems wait in per-shape buckets until a bucket holds a full batch (`max_batch_cells`) or its
oldest problem has waited `max_wait_ms`; then a worker takes them as one RowJob. Problems from
many requests share a batch, which is where an engine's throughput comes from. A long problem
runs its first `dense_first` steps the same way, as a whole row (most settle by then: every cell
busy, batched rows are the fastest form); one still changing then, or one longer than a batch,
becomes a TapeJob whose chunks workers run side by side. Every result goes to its request as
soon as its own job delivers it, so a short request never waits for a long one.

Scheduling, in order: a due bucket of fresh short problems; then resumed work (a RowJob that used
its time slice, a tape's chunks), first come first served. To keep long work moving under a flood
of short requests, when long work waits and no worker is on it, the next free worker takes it.

Backpressure: `max_queue_cells` bounds the cells of accepted, unfinished problems. A request that
would pass it is refused at once with QueueFull, unless the queue is empty (so any one request can
run). Workers: `engine.workers` threads (CPU: one per core), never more. A caller may cancel its
Future: its waiting problems are dropped and a job whose callers all cancelled stops at its next
engine call.
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

import numpy as np

from .engines.protocol import Engine
from .errors import QueueFull, RuntimeClosed, SeadError
from .loop import Chunk, Result, Results, RowJob, TapeJob, bucket_lengths, split_by_part
from .tasks import Problems

TILE_FROM_DEFAULT = 1 << 11  # tapes longer than this may run in tiles (bench/tiles.py --sweep chose it)
DENSE_FIRST = 32  # steps a long problem runs as a whole row before tiles (random sums of 10^4 digits take 4 or 5)
GRID_TILE_FROM = 1 << 14  # grids, unless told otherwise: a product of about 128-digit operands (CPU)
SLICE_SECONDS = 0.02  # a RowJob yields its worker after this long, so others get a turn
MIN_BATCH_CELLS = 1 << 12  # when splitting a bucket across idle workers, no batch smaller than this


class _Request:
    """One submit(): its results in input order and the Future that gets them."""

    def __init__(self, size: int, cells: int):
        self.answers = np.full(size, None, object)  # filled by slices from each job's deliveries
        self.steps = np.zeros(size, np.int64)
        self.converged = np.zeros(size, bool)
        self.remaining, self.cells_left = size, cells
        self.future: Future = Future()

    @property
    def dropped(self) -> bool:
        return self.future.cancelled()

    def record(self, index: np.ndarray, answers: list, steps: np.ndarray, converged: np.ndarray) -> None:
        if len(index) == 1:
            self.answers[index[0]] = answers[0]
        else:
            self.answers[index] = np.array(answers, object) if not isinstance(answers, np.ndarray) else answers
        self.steps[index] = steps
        self.converged[index] = converged
        self.remaining -= len(index)


class _Waiting(NamedTuple):
    """Problems of one request waiting in a bucket: those from `start` on are still waiting."""

    request: _Request
    index: np.ndarray        # their positions in the request
    problems: Problems
    evaluations: np.ndarray  # (n,) int64
    caps: np.ndarray         # (n,) int64
    dense_limits: np.ndarray  # (n,) int64: steps as a whole row before tiles (past any cap: never)
    since: float
    start: int = 0

    @property
    def left(self) -> int:
        return len(self.index) - self.start

    def part(self, count: int) -> "_Waiting":
        """The next `count` waiting problems (slices and views: no per-problem work)."""
        a, b = self.start, self.start + count
        return _Waiting(self.request, self.index[a:b], self.problems.slice(a, b), self.evaluations[a:b],
                        self.caps[a:b], self.dense_limits[a:b], self.since)


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


def padded_shapes(task, problems: Problems) -> np.ndarray:
    """(n, rank) int64: each problem's row shape in a batch (bucket_shape)."""
    if task.boundary == "ring":
        return problems.shapes
    return bucket_lengths(problems.shapes.reshape(-1)).reshape(problems.shapes.shape)


def bucket_keys(task, problems: Problems) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """-> (n,) int64 bucket number of each problem, and each bucket's padded row shape."""
    shapes = padded_shapes(task, problems)
    if shapes.shape[1] == 1:
        keys = shapes[:, 0]
    else:
        keys = shapes[:, 0] * (1 << 32) + shapes[:, 1]
    unique, inverse = np.unique(keys, return_inverse=True)
    first = np.zeros(len(unique), np.int64)
    first[inverse[::-1]] = np.arange(len(keys))[::-1]
    return inverse.reshape(-1), [tuple(shapes[i].tolist()) for i in first.tolist()]


class Scheduler:
    def __init__(self, engine: Engine, task, *, max_batch_cells: int, max_batch_rows: int,
                 max_wait_ms: float, max_queue_cells: int, tile_from: int, tile: tuple[int, int],
                 dense_first: int = DENSE_FIRST, workers: int | None = None):
        self.engine, self.task = engine, task
        self.max_batch_cells, self.max_batch_rows = max_batch_cells, max_batch_rows
        self.max_wait, self.max_queue_cells = max_wait_ms / 1000, max_queue_cells
        # problems with more cells than this run in tiles; smaller ones as whole rows (which must fit
        # the engine). A grid's tiles have a halo on four sides: it tiles only from GRID_TILE_FROM.
        if task.rank == 2 and tile_from == TILE_FROM_DEFAULT:
            # a grid tiles once it fills the engine's preferred batch many times over: on a GPU, where a
            # call costs more than its steps, an H200 ran 200- and 400-digit products faster dense
            # (bench/results/gpu_check_h200_window_layouts.json) and 1,000-digit ones faster tiled
            # (bench/results/gpu_check_h200.json)
            tile_from = max(GRID_TILE_FROM, engine.batch_cells)
        self.tile_from = min(tile_from, engine.max_row_cells // 2)
        self.tile = tile  # (cells per tile, tiles per row at most)
        self.dense_first = dense_first
        self.cond = threading.Condition()
        self.buckets: dict[tuple[int, ...], deque[_Waiting]] = {}  # by a row's padded cell shape
        self.bucket_rows: dict[tuple[int, ...], int] = {}   # problems waiting in each bucket
        self.bucket_plan: dict[tuple[int, ...], int] = {}   # a bucket's planned rows per batch
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
    def submit(self, problems: Problems, evaluations: np.ndarray, caps: np.ndarray) -> Future:
        n = len(problems)
        cells = int(problems.lengths.sum())
        request = _Request(n, cells)
        if not n:
            request.future.set_running_or_notify_cancel()
            request.future.set_result(Results([], np.zeros(0, np.int64), np.zeros(0, bool)))
            return request.future
        # sort into tapes and buckets before taking the lock, which the workers wait on
        now = time.perf_counter()
        long = problems.lengths > self.tile_from if self.tile_from is not None else np.zeros(n, bool)
        if self.dense_first and long.any():  # those that fit a batch run their first steps as one row
            padded = np.prod(padded_shapes(self.task, problems), axis=1)
            # a row past a worker's share of a batch tiles from the first step, so that workers can
            # share it (tiles_ort_cpu.json: a 10^6-cell ring for 100 generations, 0.23 s tiled and
            # 0.21 s as one row)
            fits = min(self.max_batch_cells // len(self.threads), self.engine.max_row_cells)
            rowable = [cells <= fits and self.engine.max_rows(cells) >= 1 for cells in padded[long].tolist()]
            long[np.flatnonzero(long)[rowable]] = False
            dense_limits = np.where(problems.lengths > self.tile_from, self.dense_first, np.iinfo(np.int64).max)
        else:
            dense_limits = np.full(n, np.iinfo(np.int64).max)
        tapes = np.flatnonzero(long).tolist()
        short = np.flatnonzero(~long) if tapes else np.arange(n)
        waiting: list[tuple[tuple[int, ...], _Waiting]] = []
        if len(short):
            subset = problems if len(short) == n else problems.take(short)
            keys, shapes = bucket_keys(self.task, subset)
            order = np.argsort(keys, kind="stable")
            bounds = np.flatnonzero(np.diff(keys[order])) + 1
            for group in np.split(order, bounds):
                shape = shapes[int(keys[group[0]])]
                if self.engine.max_rows(math.prod(shape)) < 1 or math.prod(shape) > self.engine.max_row_cells:
                    raise SeadError(f"a problem of {math.prod(shape):,} cells (padded) is more than engine "
                                    f"'{self.engine.name}' takes in one row ({self.engine.max_row_cells:,})")
                index = short[group]
                part = subset if len(group) == len(subset) else subset.take(group)
                waiting.append((shape, _Waiting(request, index, part, evaluations[index], caps[index],
                                                dense_limits[index], now)))
        with self.cond:
            if self.closed:
                raise RuntimeClosed("the runtime is closed")
            if self.queued_cells and self.queued_cells + cells > self.max_queue_cells:
                raise QueueFull(f"the queue holds {self.queued_cells:,} cells; {cells:,} more would pass "
                                f"max_queue_cells={self.max_queue_cells:,}")
            self.queued_cells += cells
            self.queued_problems += n
            request.future.add_done_callback(lambda f, r=request: self._on_cancel(r) if f.cancelled() else None)
            for i in tapes:
                p = problems.parsed(i)
                tape = TapeJob(self.engine, self.task, p, int(evaluations[i]), int(caps[i]), None, *self.tile)
                tape.deliver = self._tape_deliverer(request, i, p.length, tape)
                self.tapes.add(tape)
                self._push(_TapeWork(tape, frozenset([request]), None))
            for shape, w in waiting:
                self.buckets.setdefault(shape, deque()).append(w)
                self.bucket_rows[shape] = self.bucket_rows.get(shape, 0) + w.left
                self.bucket_plan.pop(shape, None)  # more problems: the next take plans the cut again
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
                self.bucket_rows.clear()
                self.bucket_plan.clear()
                self.ready.clear()
            self.cond.notify_all()
        self._fail(dropped, RuntimeClosed("the runtime was closed before this request finished"))
        for t in self.threads:
            t.join()

    def stats(self) -> dict:
        with self.cond:
            waiting = sum(w.left for q in self.buckets.values() for w in q if not w.request.dropped)
            return {"queued_cells": self.queued_cells, "queued_problems": self.queued_problems,
                    "in_flight_problems": self.queued_problems - waiting, **self.counters}

    def progress(self) -> list[dict]:
        """Steps and active tiles of each long tape in flight."""
        with self.cond:
            tapes = list(self.tapes)
        return [t.progress() for t in tapes]

    # -- delivery --------------------------------------------------------------------------------
    def _deliver(self, request: _Request, index: np.ndarray, lengths: np.ndarray, answers: list,
                 steps: np.ndarray, converged: np.ndarray, tape: TapeJob | None = None) -> None:
        """Record finished problems of one request under one acquisition of the lock, and
        complete the request if they finish it."""
        finished = False
        with self.cond:
            if tape is not None:
                self.counters["tile_cell_steps"] += tape.cell_steps
                self.tapes.discard(tape)
            if request.dropped or request.remaining <= 0:
                return
            request.record(index, answers, steps, converged)
            request.cells_left -= int(lengths.sum())
            self.queued_cells -= int(lengths.sum())
            self.queued_problems -= len(index)
            self.counters["cell_updates"] += int((lengths * steps).sum())
            self.counters["problems_solved"] += len(index)
            finished = request.remaining == 0
        if finished and request.future.set_running_or_notify_cancel():  # False: cancelled meanwhile
            request.future.set_result(Results(request.answers.tolist(), request.steps, request.converged))

    def _tape_deliverer(self, request: _Request, index: int, cells: int, tape: TapeJob):
        """A long tape's delivery: its one result."""
        def deliver(result: Result) -> None:
            self._deliver(request, np.array([index]), np.array([cells]), [result.answer],
                          np.array([result.steps]), np.array([result.converged]), tape)
        return deliver

    def _row_deliverer(self, waiting: list[_Waiting]):
        """A RowJob's delivery: the rows of one retirement, to the requests they belong to."""
        offsets = np.cumsum([0] + [len(w.index) for w in waiting])

        def deliver(rows: np.ndarray, answers: list, steps: np.ndarray, converged: np.ndarray) -> None:
            for part, sel in split_by_part(offsets, rows):
                w = waiting[part]
                local = rows[sel] - offsets[part]
                self._deliver(w.request, w.index[local], w.problems.lengths[local],
                              answers if len(sel) == len(rows) else [answers[i] for i in sel.tolist()],
                              steps[sel], converged[sel])
        return deliver

    def _hand_over(self, waiting: list[_Waiting]):
        """A RowJob's hand-over: problems still changing at their dense limit go on as TapeJobs,
        from their state codes and steps."""
        offsets = np.cumsum([0] + [len(w.index) for w in waiting])

        def hand_over(rows: np.ndarray, state_codes: np.ndarray, steps: np.ndarray) -> None:
            with self.cond:
                for part, sel in split_by_part(offsets, rows):
                    w = waiting[part]
                    if w.request.dropped:
                        continue
                    for slot, local in zip(sel.tolist(), (rows[sel] - offsets[part]).tolist()):
                        p = w.problems.parsed(local)
                        states = state_codes[slot][tuple(slice(0, d) for d in self.task.shape(p))]
                        tape = TapeJob(self.engine, self.task, p, int(w.evaluations[local]), int(w.caps[local]), None,
                                       *self.tile, states=np.ascontiguousarray(states), steps=int(steps[slot]))
                        tape.deliver = self._tape_deliverer(w.request, int(w.index[local]), p.length, tape)
                        self.tapes.add(tape)
                        self._push(_TapeWork(tape, frozenset([w.request]), None))
                self.cond.notify_all()
        return hand_over

    def _on_cancel(self, request: _Request) -> None:
        """The caller cancelled: free its share of the queue; its waiting problems are skipped."""
        with self.cond:
            if request.remaining > 0:
                self.queued_cells -= request.cells_left
                self.queued_problems -= request.remaining
                request.remaining = request.cells_left = 0
            self.cond.notify_all()

    def _fail(self, requests, exc: BaseException) -> None:
        with self.cond:
            failed = [r for r in requests if r.remaining > 0 and not r.dropped]
            for r in failed:  # nothing more comes for it: free its share of the queue
                self.queued_problems -= r.remaining
                self.queued_cells -= r.cells_left
                r.remaining = r.cells_left = 0
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
            if shape is not None and (not starved or not self.ready):
                work = self._take(shape)
                if work is not None:
                    return work
                continue
            if self.ready:
                return heapq.heappop(self.ready)[1]
            if self.closed and not self.buckets and self.running == 0:
                return None
            self.cond.wait(wait)

    def _due_bucket(self, now: float):
        """-> (shape of the due bucket with the oldest problem or None, seconds until one is due or None)."""
        best, oldest, next_due = None, math.inf, None
        for shape, queue in self.buckets.items():
            since = queue[0].since
            if self.closed or self.bucket_rows[shape] * math.prod(shape) >= self.max_batch_cells \
                    or now - since >= self.max_wait:
                if since < oldest:
                    best, oldest = shape, since
            else:
                due = since + self.max_wait - now
                next_due = due if next_due is None else min(next_due, due)
        return best, next_due

    def _take(self, shape: tuple[int, ...]) -> _Rows | None:
        """Under the lock: the next batch of a bucket, or None if all it held was cancelled."""
        queue, length = self.buckets[shape], math.prod(shape)  # length: cells per row
        rows = self.bucket_plan.get(shape)
        if rows is None:
            # cut the bucket into equal batches, as many as the workers or a multiple of them, so
            # that no worker is left with a small remainder while the others idle; the cut holds
            # until problems arrive or the bucket empties
            most = min(self.max_batch_rows, self.engine.max_rows(length), max(1, self.max_batch_cells // length))
            waiting, workers = self.bucket_rows[shape], len(self.threads)
            batches = workers * -(-waiting // (most * workers))
            rows = self.bucket_plan[shape] = min(most, max(-(-waiting // batches), MIN_BATCH_CELLS // length, 1))
        taken, count = [], 0
        while queue and count < rows:
            w = queue.popleft()
            room = rows - count
            if w.left > room:  # the rest stays at the head of the queue
                queue.appendleft(w._replace(start=w.start + room))
            part = w.part(min(room, w.left))
            count += len(part.index)
            if not w.request.dropped:  # cancelled callers' problems leave here, without running
                taken.append(part)
        if queue:
            self.bucket_rows[shape] -= count
        else:
            del self.buckets[shape], self.bucket_rows[shape]
            self.bucket_plan.pop(shape, None)
        if not taken:
            return None
        n = sum(len(w.index) for w in taken)
        self.counters["batches"] += 1
        for listener in self.listeners:
            listener(n, n * length)
        limits = np.concatenate([w.dense_limits for w in taken])
        long = limits.min() < np.iinfo(np.int64).max
        job = RowJob(self.engine, self.task, [w.problems for w in taken],
                     np.concatenate([w.evaluations for w in taken]), np.concatenate([w.caps for w in taken]),
                     self._row_deliverer(taken), shape, limits if long else None,
                     self._hand_over(taken) if long else None)
        return _Rows(job, frozenset(w.request for w in taken), False)

    def _work(self) -> None:
        kept = None  # work this worker goes on with itself
        while True:
            with self.cond:
                work, kept = kept, None
                if work is None:
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
                self._fail(work.requests, exc)
            with self.cond:
                if isinstance(work.job, TapeJob) and work.job.failed:
                    self.tapes.discard(work.job)
                if not self.cancelled and len(follow) == 1 and not self.ready \
                        and self._due_bucket(time.perf_counter())[0] is None:
                    # the one thing to run next, and nothing else waits: run it here (a long
                    # tape's rounds are mostly one chunk; handing each to another thread cost
                    # a fifth of a carry chain's solve)
                    kept = follow[0]
                    self.running_resumed += kept.resumed - work.resumed
                else:
                    self.running -= 1
                    self.running_resumed -= work.resumed
                    if not self.cancelled:
                        for item in follow:
                            self._push(item)
                    self.cond.notify_all()
            if follow and self.cancelled:
                self._fail(work.requests, RuntimeClosed("the runtime was closed before this request finished"))
