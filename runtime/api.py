"""The public runtime: a loaded model on one engine, behind the batching front.

    with Runtime("addition") as rt:
        rt.solve(["99999+1"])                     # -> [Result(answer='100000', steps=5, converged=True)]
        future = rt.submit(lines)                 # concurrent.futures.Future[list[Result]]
        results = await rt.solve_async(lines)

Every call validates all of its lines first (InputError names the first bad one; nothing is
solved), then queues them on the shared front (runtime/batching.py). Thread-safe.
"""
from __future__ import annotations

import asyncio
import itertools
import sys
from collections import deque
from concurrent.futures import Future
from typing import Iterable, Iterator

from .batching import Scheduler
from .errors import EngineUnavailable, InputError, ModelFileError, QueueFull, RuntimeClosed, SeadError
from .loop import DEFAULT_MAX_GENERATIONS, Limits, Result
from .model_file import StepModel, load_step_model
from .tasks import MAX_STEPS, Parsed, get_task
from .tiles import RUN_TILES, TILE

ENGINES = ("auto", "ort", "ort-cuda", "trt")
TILE_FROM = 1 << 11  # tapes longer than this run in tiles (README "Tiles": bench/tiles.py --sweep chose it)
DEFAULT_MAX_BATCH_ROWS = 4096
DEFAULT_MAX_QUEUE_CELLS = 1 << 26
STREAM_CHUNK_LINES = 1 << 14


def make_engine(step: StepModel, engine: str = "auto", k: int | None = None):
    """-> an engine instance. `auto` tries trt, then ort-cuda, then ort, and says on stderr why it
    passed over an engine whose package is installed. `k` fixes the steps per engine call; by
    default ONNX Runtime engines start at 4 and go deeper while problems run."""
    if engine not in ENGINES:
        raise SeadError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "auto":
        for name in ("trt", "ort-cuda", "ort"):
            try:
                return make_engine(step, name, k)
            except EngineUnavailable as exc:
                if not exc.quiet:
                    print(f"sead: engine '{name}' unavailable ({exc}); trying the next", file=sys.stderr, flush=True)
        raise EngineUnavailable("no engine is available: pip install 'sead[cpu]' for ONNX Runtime on the CPU")
    if engine in ("ort", "ort-cuda"):
        from .engines.ort import K_CHOICES, OrtCpuEngine, OrtCudaEngine
        return (OrtCpuEngine if engine == "ort" else OrtCudaEngine)(step, (k,) if k else K_CHOICES)
    from .engines.trt import TrtEngine
    return TrtEngine(step, k or 8)


class Runtime:
    """A loaded model on one engine, shared by any number of threads and coroutines.

    model: a shipped model's name or an exported .onnx path.
    engine: "auto", "ort", "ort-cuda", "trt", or a callable step -> Engine (for engine options).
    max_batch_cells: cells per engine batch at most (default: the engine's preferred size).
    max_batch_rows: problems per engine batch at most.
    max_wait_ms: how long a short problem may wait for others to share its batch.
    max_queue_cells: cells of accepted, unfinished problems; past it submit() raises QueueFull.
    tile_from: tapes longer than this many cells run in tiles (runtime/tiles.py).
    tile: (cells per tile, tiles per row at most); small tiles are for tests.
    allow_unverified_sizes: also answer problems larger than the model's sead.verified_size (the
        size up to which it was checked exact when it shipped; 0: no limit); refused by default.
    """

    def __init__(self, model: str = "addition", engine="auto", *, k: int | None = None,
                 max_batch_cells: int | None = None, max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS,
                 max_wait_ms: float = 0.0, max_queue_cells: int = DEFAULT_MAX_QUEUE_CELLS,
                 tile_from: int = TILE_FROM, tile: tuple[int, int] = (TILE, RUN_TILES), workers: int | None = None,
                 self_test: bool = True, allow_unverified_sizes: bool = False):
        self.step = load_step_model(model)
        self.metadata = self.step.metadata
        self.size_limit = 0 if allow_unverified_sizes else self.metadata.verified_size
        self.task = get_task(self.metadata.task)
        # an engine name, or a callable that makes an engine for the step (engine options, tests)
        self.engine = engine(self.step) if callable(engine) else make_engine(self.step, engine, k)
        self.engine_name = self.engine.name
        self.scheduler = Scheduler(self.engine, self.task, self.metadata.state_channels,
                                   max_batch_cells=max_batch_cells or self.engine.batch_cells,
                                   max_batch_rows=max_batch_rows, max_wait_ms=max_wait_ms,
                                   max_queue_cells=max_queue_cells, tile_from=tile_from, tile=tile, workers=workers,
                                   state_code=self.metadata.state)
        self.closed = False
        if self_test:
            try:
                self._self_test()
            except BaseException:
                self.close()
                raise

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(cancel=exc_type is not None)  # leaving on an error or Ctrl-C: no need to finish

    def close(self, cancel: bool = False) -> None:
        """Finish what was submitted (or, with cancel, drop what has not started: those requests
        fail with RuntimeClosed), then release the workers and the engine. Idempotent."""
        if getattr(self, "closed", True):  # closed, or __init__ failed before the workers started
            return
        self.closed = True
        self.scheduler.close(cancel)
        self.engine.close()

    def __del__(self):
        # a runtime dropped without close() still lets its worker threads go
        try:
            self.close()
        except Exception:
            pass

    def _self_test(self) -> None:
        """Solve the task's canonical problems and check them against its oracle: a model file that
        does not do its task is refused here, before it can answer anything."""
        lines = self.task.canonical_lines()
        for line, result in zip(lines, self.solve(lines)):
            want = self.task.answer(self.task.parse(line))
            if result.answer != want:
                got = "no answer (did not converge)" if result.answer is None else repr(result.answer)
                raise ModelFileError(f"{self.step.path}: fails its self-test: {line!r} gave {got}, expected {want!r}")

    # -- validation ------------------------------------------------------------------------------
    def parse(self, line: str, number: int | None = None, source: str | None = None) -> Parsed:
        """One problem line -> Parsed; raises InputError (reason, line, source)."""
        try:
            return self.task.parse(line)
        except InputError as exc:
            raise InputError(exc.reason, number, source) from None

    def invalid(self, lines: Iterable[str], max_steps: int | None = None) -> list[InputError]:
        """Every invalid line (not just the first), each an InputError with its 1-based line:
        what submit() would refuse, for a caller that reports them all."""
        errors = []
        for i, line in enumerate(lines, 1):
            try:
                self.limits([self.parse(line, i)], max_steps, i)
            except InputError as exc:
                errors.append(exc)
        return errors

    def limits(self, problems: list[Parsed], max_steps: int | None = None, first_line: int = 1,
               source: str | None = None) -> list[Limits]:
        """Each problem's step limits; refuses a cap or generation count that cannot be honoured,
        and a problem past the model's verified size."""
        if self.size_limit:
            for i, p in enumerate(problems):
                if self.task.size(p) > self.size_limit:
                    raise InputError(f"has size {self.task.size(p):,} ({self.task.size_words}); this model was "
                                     f"checked exact only up to {self.size_limit:,} (sead.verified_size); "
                                     f"--allow-unverified-sizes runs it anyway", first_line + i, source)
        if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int)
                                      or not 0 <= max_steps <= MAX_STEPS):
            raise SeadError(f"max_steps must be an integer from 0 to {MAX_STEPS:,}, got {max_steps!r}")
        if self.task.convergence == "fixed_point":  # problems share a few shapes: one Limits per shape
            if max_steps is not None:
                return [Limits.fixed_point_cap(max_steps)] * len(problems)
            radius, made = self.metadata.radius, {}
            for p in problems:
                if (p.shape or p.length) not in made:
                    made[p.shape or p.length] = Limits.fixed_point_cap(self.task.step_cap(p, radius))
            return [made[p.shape or p.length] for p in problems]
        cap = max_steps if max_steps is not None else DEFAULT_MAX_GENERATIONS
        out = []
        for i, p in enumerate(problems):
            if p.generations > cap:
                raise InputError(f"asks for {p.generations:,} generations; at most {cap:,} are run "
                                 f"({'max_steps' if max_steps is not None else 'the default step cap'})",
                                 first_line + i, source)
            out.append(Limits.generations(p.generations))
        return out

    def work(self, lines: Iterable[str], max_steps: int | None = None) -> int:
        """An upper bound on the cell-steps that solving these lines may take: each problem's cells
        times its step cap (or its generations). What a service bounds per request. Raises
        InputError as submit() would."""
        problems = [self.parse(line, i) for i, line in enumerate(lines, 1)]
        return sum(p.length * lim.evaluations for p, lim in zip(problems, self.limits(problems, max_steps)))

    # -- solving ---------------------------------------------------------------------------------
    def submit(self, lines: Iterable[str], max_steps: int | None = None) -> Future:
        """Queue problem texts -> Future of their Results in input order. Raises InputError for a
        bad line and QueueFull when the queue is full, at once, with nothing queued. Cancelling
        the Future (future.cancel()) drops its problems: those waiting never run, and a job whose
        callers all cancelled stops at its next engine call."""
        lines, parse = list(lines), self.task.parse
        try:
            problems = [parse(line) for line in lines]
        except InputError:  # again, line by line, to name the first bad one
            problems = [self.parse(line, i) for i, line in enumerate(lines, 1)]
        return self.submit_parsed(problems, max_steps)

    def _open(self) -> None:
        if self.closed:
            raise RuntimeClosed("the runtime is closed")

    def submit_parsed(self, problems: list[Parsed], max_steps: int | None = None, first_line: int = 1,
                      source: str | None = None) -> Future:
        self._open()
        return self.scheduler.submit(problems, self.limits(problems, max_steps, first_line, source))

    def solve(self, lines: Iterable[str], max_steps: int | None = None) -> list[Result]:
        return self.submit(lines, max_steps).result()

    def solve_parsed(self, problems: list[Parsed], max_steps: int | None = None) -> list[Result]:
        return self.submit_parsed(problems, max_steps).result()

    async def solve_async(self, lines: Iterable[str], max_steps: int | None = None) -> list[Result]:
        return await asyncio.wrap_future(self.submit(lines, max_steps))

    def stream(self, lines: Iterable[str], max_steps: int | None = None, chunk: int = STREAM_CHUNK_LINES,
               source: str | None = None) -> Iterator[Result]:
        """Solve an iterable of any size in bounded memory; results come in input order. Two
        chunks are in flight at a time, so the engine never waits for the caller."""
        it = iter(lines)
        in_flight: deque[Future] = deque()
        number = 0
        while True:
            block = list(itertools.islice(it, chunk))
            if block:
                parsed = [self.parse(line, number + i, source) for i, line in enumerate(block, 1)]
                in_flight.append(self._submit_waiting(parsed, max_steps, number + 1, source, in_flight))
                number += len(block)
            if not in_flight:
                return
            if len(in_flight) >= 2 or not block:
                yield from in_flight.popleft().result()

    def _submit_waiting(self, problems, max_steps, first_line, source, in_flight: deque) -> Future:
        """submit_parsed, waiting for this caller's earlier chunks while the queue is full."""
        while True:
            try:
                return self.submit_parsed(problems, max_steps, first_line, source)
            except QueueFull:
                if not in_flight:
                    raise
                in_flight[0].exception()  # wait for the oldest chunk to finish, then retry

    # -- observing -------------------------------------------------------------------------------
    def stats(self) -> dict:
        """Gauges (queued_cells and queued_problems: accepted, not yet answered; in_flight_problems: of
        those, the ones in an engine job) and counters (batches, problems_solved, cell_updates,
        tile_cell_steps)."""
        self._open()
        return self.scheduler.stats()

    def progress(self) -> list[dict]:
        """Each long tape in flight: cells, steps so far, active tiles, tiles."""
        self._open()
        return self.scheduler.progress()

    def add_batch_listener(self, listener) -> None:
        """listener(rows, cells) is called as each batch of short problems is formed. Keep it quick."""
        self.scheduler.listeners.append(listener)
