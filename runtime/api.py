"""The public runtime: a loaded model on one engine, behind the batching front.

    with Runtime("addition") as rt:
        rt.solve(["99999+1"])                     # -> Results([Result(answer='100000', steps=5, converged=True)])
        future = rt.submit(lines)                 # concurrent.futures.Future[Results]
        results = await rt.solve_async(lines)
        for number, result in rt.stream(lines):   # any number of lines, bounded memory, in order
            ...

Every call validates all of its lines first (InputError names the first bad one; nothing is
solved), then queues them on the shared front (runtime/batching.py). Thread-safe. Problems travel
as arrays (runtime/tasks: Problems) and come back as Results, a sequence of Result backed by
arrays.
"""
from __future__ import annotations

import asyncio
import itertools
import threading
from collections import deque
from concurrent.futures import Future
from typing import Iterable, Iterator, NamedTuple

import numpy as np

from .batching import DENSE_FIRST
from .batching import TILE_FROM_DEFAULT as TILE_FROM
from .batching import Scheduler
from .engines import make_engine
from .errors import InputError, ModelFileError, QueueFull, RuntimeClosed, SeadError
from .loop import DEFAULT_MAX_GENERATIONS, Result, Results
from .model_file import load_step_model
from .tasks import MAX_STEPS, Parsed, Problems, get_task
from .tiles import RUN_TILES, TILE

DEFAULT_MAX_QUEUE_CELLS = 1 << 26
STREAM_CHUNK_LINES = 1 << 14
SUBMIT_CHUNK_LINES = 1 << 18  # a larger call is validated and queued in parts, so engines start early


class Runtime:
    """A loaded model on one engine, shared by any number of threads and coroutines.

    model: a shipped model's name or an exported .onnx path.
    engine: "auto", "ort", "ort-cuda", "trt", or a callable step -> Engine (for engine options).
    max_batch_cells: cells per engine batch at most (default: the engine's preferred size).
    max_batch_rows: problems per engine batch at most (default: as many as max_batch_cells holds).
    max_wait_ms: how long a short problem may wait for others to share its batch.
    max_queue_cells: cells of accepted, unfinished problems; past it submit() raises QueueFull.
    tile_from: tapes longer than this many cells run in tiles (runtime/tiles.py) after their first
        dense_first steps as whole rows (0: tiles from the first step).
    tile: (cells per tile, tiles per row at most); default: the engine's deepest K, RUN_TILES.
    allow_unverified_sizes: also answer problems larger than the model's sead.verified_size (the
        size up to which it was checked exact when it shipped; 0: no limit); refused by default.
    """

    def __init__(self, model: str = "addition", engine="auto", *, k: int | None = None,
                 max_batch_cells: int | None = None, max_batch_rows: int | None = None,
                 max_wait_ms: float = 0.0, max_queue_cells: int = DEFAULT_MAX_QUEUE_CELLS,
                 tile_from: int = TILE_FROM, tile: tuple[int, int] | None = None, dense_first: int = DENSE_FIRST,
                 workers: int | None = None,
                 self_test: bool = True, allow_unverified_sizes: bool = False):
        self.closed = True  # until the workers exist
        self.step = load_step_model(model)
        self.metadata = self.step.metadata
        self.size_limit = 0 if allow_unverified_sizes else self.metadata.verified_size
        self.task = get_task(self.metadata.task)
        # an engine name, or a callable that makes an engine for the step (engine options, tests)
        self.engine = engine(self.step) if callable(engine) else make_engine(self.step, engine, k)
        self.engine_name = self.engine.name
        tile = tile or (max(TILE, self.engine.k_choices[-1]), RUN_TILES)
        self.scheduler = Scheduler(self.engine, self.task, max_batch_cells=max_batch_cells or self.engine.batch_cells,
                                   max_batch_rows=max_batch_rows or 1 << 40, max_wait_ms=max_wait_ms,
                                   max_queue_cells=max_queue_cells, tile_from=tile_from, tile=tile,
                                   dense_first=dense_first, workers=workers)
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

    def validate(self, lines: Iterable[str], max_steps: int | None = None, first_line: int = 1,
                 source: str | None = None) -> tuple[Problems, np.ndarray, np.ndarray]:
        """Parse and check lines -> (problems, evaluations, caps), or InputError naming the first
        bad line (numbered from first_line): what submit() would refuse."""
        lines = lines if isinstance(lines, list) else list(lines)
        try:
            problems = self.task.parse_many(lines)
        except InputError as exc:
            raise InputError(exc.reason, None if exc.line is None else exc.line + first_line - 1, source) from None
        evaluations, caps = self.limits(problems, max_steps, first_line, source)
        return problems, evaluations, caps

    def invalid(self, lines: Iterable[str], max_steps: int | None = None) -> list[InputError]:
        """Every invalid line (not just the first), each an InputError with its 1-based line:
        what submit() would refuse, for a caller that reports them all."""
        return list(self.split_invalid(lines, max_steps)[1].values())

    def split_invalid(self, lines: Iterable[str], max_steps: int | None = None, first_line: int = 1,
                      source: str | None = None) -> tuple[list[int], dict[int, InputError]]:
        """-> (offsets of the valid lines, {offset: InputError} of each invalid one, its line
        numbered from first_line). The one skip-invalid rule: `sead run --skip-invalid`,
        Runtime.stream, the NDJSON service and Ray all answer the valid lines of a block this way."""
        lines = lines if isinstance(lines, list) else list(lines)
        try:
            self.validate(lines, max_steps, first_line, source)
            return list(range(len(lines))), {}
        except InputError:  # line by line, to name each bad one
            pass
        valid, errors = [], {}
        for offset, line in enumerate(lines):
            try:
                self.validate([line], max_steps, first_line + offset, source)
                valid.append(offset)
            except InputError as exc:
                errors[offset] = exc
        return valid, errors

    def limits(self, problems: Problems, max_steps: int | None = None, first_line: int = 1,
               source: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """-> (evaluations, caps), each (n,) int64: the steps each problem may take (a fixed-point
        task's cap + 1: the step that proves the fixed point; a generations task's count) and the
        cap reported if it runs out. Refuses a cap or generation count that cannot be honoured,
        and a problem past the model's verified size."""
        if self.size_limit:
            over = np.flatnonzero(problems.sizes > self.size_limit)
            if len(over):
                i = int(over[0])
                raise InputError(f"has size {int(problems.sizes[i]):,} ({self.task.size_words}); this model was "
                                 f"checked exact only up to {self.size_limit:,} (sead.verified_size); "
                                 f"--allow-unverified-sizes runs it anyway", first_line + i, source)
        if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer))
                                      or not 0 <= max_steps <= MAX_STEPS):
            raise SeadError(f"max_steps must be an integer from 0 to {MAX_STEPS:,}, got {max_steps!r}")
        if self.task.convergence == "fixed_point":
            if max_steps is not None:
                caps = np.full(len(problems), int(max_steps), np.int64)
            else:  # default_step_cap, over arrays
                radius = self.metadata.radius
                caps = 2 * (-(-problems.diameters // radius)) + 16
            return caps + 1, caps
        cap = max_steps if max_steps is not None else DEFAULT_MAX_GENERATIONS
        over = np.flatnonzero(problems.generations > cap)
        if len(over):
            i = int(over[0])
            raise InputError(f"asks for {int(problems.generations[i]):,} generations; at most {cap:,} are run "
                             f"({'max_steps' if max_steps is not None else 'the default step cap'})",
                             first_line + i, source)
        return problems.generations.copy(), problems.generations.copy()

    def work(self, lines: Iterable[str], max_steps: int | None = None) -> int:
        """An upper bound on the cell-steps that solving these lines may take: each problem's cells
        times its step cap (or its generations). What a service bounds per request. Raises
        InputError as submit() would."""
        problems, evaluations, _ = self.validate(lines, max_steps)
        return self.work_of(problems, evaluations)

    @staticmethod
    def work_of(problems: Problems, evaluations: np.ndarray) -> int:
        """work() of problems already validated (validate's first two results), without parsing
        them again: their cells times the steps each may take, summed."""
        return int((problems.lengths * evaluations).sum())

    # -- solving ---------------------------------------------------------------------------------
    def submit(self, lines: Iterable[str], max_steps: int | None = None) -> Future:
        """Queue problem texts -> Future of their Results in input order. Raises InputError for a
        bad line and QueueFull when the queue is full, at once, with nothing queued. Cancelling
        the Future (future.cancel()) drops its problems: those waiting never run, and a job whose
        callers all cancelled stops at its next engine call."""
        lines = lines if isinstance(lines, list) else list(lines)
        if len(lines) <= SUBMIT_CHUNK_LINES:
            return self._submit(*self.validate(lines, max_steps))
        # validate and queue part by part, so the engines work while later parts are parsed; a bad
        # line anywhere cancels the parts already queued: the caller gets the error and no answers
        parts: list[Future] = []
        try:
            for start in range(0, len(lines), SUBMIT_CHUNK_LINES):
                part = lines[start: start + SUBMIT_CHUNK_LINES]
                parts.append(self._submit(*self.validate(part, max_steps, start + 1)))
        except BaseException:
            for future in parts:
                future.cancel()
            raise
        return _joined(parts)

    def submit_parsed(self, problems: list[Parsed] | Problems, max_steps: int | None = None, first_line: int = 1,
                      source: str | None = None) -> Future:
        if not isinstance(problems, Problems):
            problems = Problems.from_parsed(self.task, list(problems))
        return self._submit(problems, *self.limits(problems, max_steps, first_line, source))

    def _submit(self, problems: Problems, evaluations: np.ndarray, caps: np.ndarray) -> Future:
        if self.closed:
            raise RuntimeClosed("the runtime is closed")
        return self.scheduler.submit(problems, evaluations, caps)

    def solve(self, lines: Iterable[str], max_steps: int | None = None) -> Results:
        return self.submit(lines, max_steps).result()

    def solve_parsed(self, problems: list[Parsed] | Problems, max_steps: int | None = None) -> Results:
        return self.submit_parsed(problems, max_steps).result()

    async def solve_async(self, lines: Iterable[str], max_steps: int | None = None) -> Results:
        return await asyncio.wrap_future(self.submit(lines, max_steps))

    def stream(self, lines: Iterable[str], max_steps: int | None = None, *, skip_invalid: bool = False,
               first_line: int = 1, source: str | None = None,
               chunk: int = STREAM_CHUNK_LINES) -> Iterator[tuple[int, Result | InputError]]:
        """Solve an iterable of any size in bounded memory -> (line number, Result) in input order.
        A bad line raises InputError, or with skip_invalid is yielded as its InputError while the
        other lines are answered. Line by line over stream_blocks."""
        it = iter(lines)
        blocks = iter(lambda: list(itertools.islice(it, chunk)), [])
        for block in self.stream_blocks(blocks, max_steps, skip_invalid=skip_invalid, first_line=first_line,
                                        source=source, chunk=chunk):
            yield from block.items()

    def stream_blocks(self, blocks: Iterable[list[str]], max_steps: int | None = None, *, skip_invalid: bool = False,
                      first_line: int = 1, source: str | None = None,
                      chunk: int = STREAM_CHUNK_LINES) -> Iterator["Answered"]:
        """Solve blocks of lines (lists, any sizes; cut to at most `chunk` lines) in bounded memory
        -> one Answered per piece, in input order, its lines numbered on from first_line. Pieces
        are queued ahead of the caller, at least two and until they hold a full batch of cells
        for every worker twice over, so the engine never waits for the caller (a GPU's batches
        are large). The one streaming loop (`sead run` uses it; stream is its per-line view)."""
        number = first_line
        ahead = 2 * self.scheduler.max_batch_cells * len(self.scheduler.threads)
        in_flight: deque = deque()
        pieces = (block[i: i + chunk] for block in blocks for i in range(0, len(block), chunk))
        while True:
            block = next(pieces, None)
            if block:
                in_flight.append(self._stream_submit(block, number, max_steps, skip_invalid, source, in_flight))
                number += len(block)
            if not in_flight:
                return
            if block is None or (len(in_flight) >= 2 and sum(piece.cells for piece in in_flight) >= ahead):
                piece = in_flight.popleft()
                yield Answered(piece.first, piece.count, piece.errors, piece.future.result())

    def _stream_submit(self, block: list[str], first: int, max_steps, skip_invalid: bool, source,
                       in_flight: deque) -> "_InFlight":
        errors: dict[int, InputError] = {}
        try:
            valid = self.validate(block, max_steps, first, source)
        except InputError:
            if not skip_invalid:
                raise
            keep, errors = self.split_invalid(block, max_steps, first, source)
            valid = self.validate([block[i] for i in keep], max_steps, first, source)
        while True:
            try:
                return _InFlight(first, len(block), errors, self._submit(*valid), int(valid[0].lengths.sum()))
            except QueueFull:  # our own earlier chunk fills the queue: wait for it, then retry
                if not in_flight:
                    raise
                in_flight[0].future.exception()

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

    def _open(self) -> None:
        if self.closed:
            raise RuntimeClosed("the runtime is closed")


def _joined(parts: list[Future]) -> Future:
    """One Future of the parts' Results, concatenated in order; cancelling it cancels the parts."""
    joined: Future = Future()
    left = [len(parts)]
    lock = threading.Lock()

    def done(_):
        with lock:
            left[0] -= 1
            if left[0]:
                return
        if joined.cancelled():
            return
        failed = next((f for f in parts if f.cancelled() or f.exception() is not None), None)
        if not joined.set_running_or_notify_cancel():
            return
        if failed is None:
            joined.set_result(Results.concat([f.result() for f in parts]))
        elif failed.cancelled():
            joined.set_exception(RuntimeClosed("part of this request was cancelled"))
        else:
            joined.set_exception(failed.exception())

    joined.add_done_callback(lambda f: [p.cancel() for p in parts] if f.cancelled() else None)
    for future in parts:
        future.add_done_callback(done)
    return joined


class _InFlight(NamedTuple):
    """A block of a stream, queued: its first line number, line count, {offset: InputError} of
    its invalid lines, the Future of the others' Results, and their cells."""

    first: int
    count: int
    errors: dict
    future: Future
    cells: int


class Answered(NamedTuple):
    """A block of consecutive lines, answered: lines first .. first + count - 1; errors {offset:
    InputError} for the invalid ones (skip_invalid), results: the Results of the others, in order."""

    first: int
    count: int
    errors: dict
    results: Results

    def items(self) -> Iterator[tuple[int, Result | InputError]]:
        """(line number, Result or InputError) for each line."""
        if not self.errors:
            yield from enumerate(self.results, self.first)
            return
        results = iter(self.results)
        for offset in range(self.count):
            yield self.first + offset, self.errors[offset] if offset in self.errors else next(results)
