"""The convergence loop, written once above the engines.

    Runtime(model, engine).solve(lines) -> [Result(answer, steps, converged), ...]

Problems are grouped by tape length (padded on the right with empty cells where the task allows;
rule110 rings run at their exact length), cut into batches of bounded size, and each batch is
advanced K steps per engine call until every problem has stopped: at its own fixed point, after
its own generations, or at the step cap. A problem that hit the cap is reported converged=False
with no answer. Finished problems leave the batch when they are half of it.
"""
from __future__ import annotations

import asyncio
import itertools
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
import math
from typing import Iterable, Iterator, NamedTuple

import numpy as np

from .errors import EngineUnavailable, InputError, QueueFull, RuntimeClosed, SeadError
from .model_file import StepModel, load_step_model
from .tasks import Parsed, get_task

ENGINES = ("auto", "ort", "ort-cuda", "trt")
DEFAULT_MAX_BATCH_CELLS = 1 << 20  # cells per engine call; see README "Limits" for bytes per cell
DEFAULT_BATCH_SIZE = 4096
STREAM_CHUNK_LINES = 1 << 16
DEEPEN_BELOW_CELLS = 1 << 15
MIN_BATCH_CELLS = 1 << 12


class Result(NamedTuple):
    """answer is None when the problem did not converge (never a guess)."""

    answer: str | None
    steps: int
    converged: bool


def default_step_cap(length: int, radius: int = 1) -> int:
    """Information crosses a tape of L cells in L / radius steps; allow twice that, plus slack."""
    return 2 * math.ceil(length / radius) + 16


def bucket_length(length: int) -> int:
    """The padded length of a line-task problem: at least one empty cell past its end (so CPU
    engines can pack rows into one tape), exact up to 64 cells, then multiples of 1/16 of the
    next power of two (at most ~6% wasted cells)."""
    if length < 64:
        return length + 1
    grain = 1 << max(0, length.bit_length() - 5)
    return (length // grain + 1) * grain


def make_engine(step: StepModel, engine: str = "auto", k: int | None = None):
    """-> an engine instance. `auto` tries trt, then ort-cuda, then ort. `k` fixes the steps per
    engine call; by default ONNX Runtime engines start at 4 and go deeper while problems run."""
    if engine not in ENGINES:
        raise SeadError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "auto":
        for name in ("trt", "ort-cuda", "ort"):
            try:
                return make_engine(step, name, k)
            except EngineUnavailable:
                continue
        raise EngineUnavailable("no engine is available: pip install 'sead[cpu]' for ONNX Runtime on the CPU")
    if engine in ("ort", "ort-cuda"):
        from .engines.ort import K_CHOICES, OrtCpuEngine, OrtCudaEngine
        return (OrtCpuEngine if engine == "ort" else OrtCudaEngine)(step, (k,) if k else K_CHOICES)
    from .engines.trt import TrtEngine
    return TrtEngine(step, k or 8)


class Runtime:
    """A loaded model on one engine. Thread-safe: concurrent solve() calls share the engine and
    each use their own buffers."""

    def __init__(self, model: str = "addition", engine: str = "auto", k: int | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, max_batch_cells: int = DEFAULT_MAX_BATCH_CELLS,
                 max_wait_ms: float = 2.0, max_queue_cells: int = 1 << 24, workers: int | None = None):
        self.step = load_step_model(model)
        self.metadata = self.step.metadata
        self.task = get_task(self.metadata.task)
        self.engine = make_engine(self.step, engine, k)
        self.engine_name = self.engine.name
        self.batch_size = batch_size
        self.max_batch_cells = max_batch_cells
        # TEMPORARY API SHIM (serve branch): a plain pool instead of the real batching front
        self.max_queue_cells = max_queue_cells
        self._pool = ThreadPoolExecutor(workers or os.cpu_count() or 1, thread_name_prefix="sead-shim")
        self._lock = threading.Lock()
        self._closed = False
        self._listeners: list = []
        self._stats = dict(queued_cells=0, queued_problems=0, in_flight_problems=0, batches=0,
                           problems_solved=0, cell_updates=0)

    # -- TEMPORARY API SHIM (serve branch): submit / solve_async / close / stats -------------------
    def submit(self, lines: Iterable[str], max_steps: int | None = None) -> Future:
        self._check_open()
        parsed = [self.parse(line, i) for i, line in enumerate(lines, 1)]
        cells = sum(p.length for p in parsed)
        with self._lock:
            if self._stats["queued_cells"] + cells > self.max_queue_cells:
                raise QueueFull(f"the queue holds {self._stats['queued_cells']} cells; {cells} more would "
                                f"exceed max_queue_cells={self.max_queue_cells}")
            self._stats["queued_cells"] += cells
            self._stats["queued_problems"] += len(parsed)
            return self._pool.submit(self._run_submitted, parsed, cells, max_steps)

    def _run_submitted(self, parsed: list[Parsed], cells: int, max_steps: int | None) -> list[Result]:
        with self._lock:
            self._stats["queued_problems"] -= len(parsed)
            self._stats["in_flight_problems"] += len(parsed)
        try:
            results = self.solve_parsed(parsed, max_steps)
        finally:
            with self._lock:
                self._stats["queued_cells"] -= cells
                self._stats["in_flight_problems"] -= len(parsed)
        with self._lock:
            self._stats["batches"] += 1
            self._stats["problems_solved"] += len(parsed)
            self._stats["cell_updates"] += sum(p.length * r.steps for p, r in zip(parsed, results))
        for fn in list(self._listeners):
            fn(len(parsed), cells)
        return results

    async def solve_async(self, lines: Iterable[str], max_steps: int | None = None) -> list[Result]:
        return await asyncio.wrap_future(self.submit(lines, max_steps))

    def stats(self) -> dict:
        self._check_open()
        with self._lock:
            return dict(self._stats)

    def add_batch_listener(self, fn) -> None:
        self._check_open()
        self._listeners.append(fn)

    def close(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=True)

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeClosed("the runtime is closed")

    # -- parsing -------------------------------------------------------------------------------
    def parse(self, line: str, number: int | None = None, source: str | None = None) -> Parsed:
        self._check_open()
        try:
            return self.task.parse(line)
        except InputError as exc:
            raise InputError(exc.reason, number, source) from None

    # -- solving -------------------------------------------------------------------------------
    def solve(self, lines: Iterable[str], max_steps: int | None = None) -> list[Result]:
        """Solve problem texts; raises InputError (with its 1-based line number) on a bad one."""
        self._check_open()
        parsed = [self.parse(line, i) for i, line in enumerate(lines, 1)]
        return self.solve_parsed(parsed, max_steps)

    def stream(self, lines: Iterable[str], max_steps: int | None = None,
               chunk: int = STREAM_CHUNK_LINES) -> Iterator[Result]:
        """Solve an iterable of any size in bounded memory; results come in input order."""
        it = iter(lines)
        number = 0
        while True:
            block = list(itertools.islice(it, chunk))
            if not block:
                return
            parsed = [self.parse(line, number + i) for i, line in enumerate(block, 1)]
            number += len(block)
            yield from self.solve_parsed(parsed, max_steps)

    def solve_parsed(self, problems: list[Parsed], max_steps: int | None = None,
                     on_done=None) -> list[Result]:
        """Solve validated problems; `on_done(n)` is called as batches of n finish."""
        results: list[Result | None] = [None] * len(problems)
        work = [(batch, length) for length, members in self._groups(problems)
                for batch in self._batches(members, length)]
        workers = min(getattr(self.engine, "parallel_batches", 1), len(work))
        solve = lambda item: self._solve_batch([problems[i] for i in item[0]], item[0], item[1], max_steps, results,
                                               exclusive=workers == 1)
        if workers <= 1:
            for item in work:
                solve(item)
                if on_done:
                    on_done(len(item[0]))
        else:  # CPU engines: batches side by side, one core each (engines release the GIL)
            with ThreadPoolExecutor(workers) as pool:
                futures = {pool.submit(solve, item): len(item[0]) for item in work}
                for future in as_completed(futures):
                    future.result()
                    if on_done:
                        on_done(futures[future])
        return results  # type: ignore[return-value]

    def _groups(self, problems: list[Parsed]):
        groups: dict[int, list[int]] = {}
        for i, p in enumerate(problems):
            length = bucket_length(p.length) if self.task.can_pad else p.length
            groups.setdefault(length, []).append(i)
        return sorted(groups.items())

    def _batches(self, members: list[int], length: int):
        size = max(1, min(self.batch_size, self.max_batch_cells // length))
        workers = getattr(self.engine, "parallel_batches", 1)
        if workers > 1:  # enough batches to keep every worker busy, none so small that calls dominate
            size = min(size, max(-(-len(members) // workers), MIN_BATCH_CELLS // length, 1))
        engine_rows = getattr(self.engine, "max_rows", None)  # TensorRT's element limit; CPU windows
        if engine_rows is not None:
            size = max(1, min(size, engine_rows(length)))
        for start in range(0, len(members), size):
            yield members[start:start + size]

    def _solve_batch(self, problems: list[Parsed], index: list[int], length: int,
                     max_steps: int | None, results: list, exclusive: bool = True) -> None:
        task, meta = self.task, self.metadata
        x = task.encode_many(problems, length)
        if task.convergence == "generations":
            limit = np.array([p.generations for p in problems], np.int64)
        else:
            limit = np.array([max_steps if max_steps is not None else default_step_cap(p.length, meta.radius)
                              for p in problems], np.int64)
        batch = self.engine.start(x, exclusive=exclusive)  # a batch that runs alone may use every core
        try:
            self._run_batch(batch, problems, index, length, limit, results)
        finally:
            batch.close()  # device memory or a graph slot goes back now, not at garbage collection

    def _run_batch(self, batch, problems: list[Parsed], index: list[int], length: int,
                   limit: np.ndarray, results: list) -> None:
        task = self.task
        steps = np.zeros(len(problems), np.int64)
        rows = np.arange(len(problems))  # original row of each row still in the engine batch
        ks, depth, ran_total = self.engine.k_choices, 0, 0
        converged = np.zeros(len(problems), bool)
        done = limit <= 0  # rule110 with 0 generations, or a zero cap
        converged[done] = task.convergence == "generations"
        while True:
            live = ~done[rows]
            if not live.any() or (done[rows].sum() * 2 >= len(rows)):
                finished = rows[~live]
                if len(finished):
                    answers = task.decode_many(batch.symbols()[~live], [problems[r] for r in finished])
                    for r, answer in zip(finished.tolist(), answers):
                        ok = bool(converged[r])
                        results[index[r]] = Result(answer if ok else None, int(steps[r]), ok)
                if not live.any():
                    return
                batch.keep(np.flatnonzero(live))
                rows = rows[live]
            budget = limit[rows] - steps[rows]
            k = ks[depth]
            ran = np.minimum(budget, k)
            # an engine may step a problem past its budget (CPU packing does); those steps are
            # never counted, and such a problem is finished either way
            counts = np.minimum(batch.advance(budget.astype(np.float32), k), ran)
            steps[rows] += counts
            if task.convergence == "generations":
                newly = steps[rows] >= limit[rows]
                converged[rows[newly]] = True
            else:
                stopped = counts < ran  # an evaluated step changed nothing: exact fixed point
                converged[rows[stopped]] = True
                newly = stopped | (steps[rows] >= limit[rows])
            done[rows[newly]] = True
            ran_total += k
            # most problems still running: go deeper per call. A large batch, where one step
            # dwarfs the cost of a call, goes deeper only once it has run 4x the next depth, so
            # steps past the last one that counts stay under a quarter of the work (a long carry
            # chain or parity wave still reaches K = 64; an 8-step million-digit sum stays at 4)
            if newly.sum() * 2 < len(rows) and depth + 1 < len(ks) and (
                    len(rows) * length < DEEPEN_BELOW_CELLS or 4 * ks[depth + 1] <= ran_total):
                depth += 1
