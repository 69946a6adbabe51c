"""The convergence loop, written once above the engines (runtime/engines/protocol.py).

Two kinds of job, both advancing K steps per engine call and reading only small per-row numbers
back to decide what happens next:

- RowJob: short tapes of one padded length, resident in one engine batch until each has stopped.
  Finished problems leave the batch once they are half of it.
- TapeJob: one long tape, at rest in compact form (runtime/tiles.py); each call runs only its
  active tiles, in chunks that workers run side by side, and stitches the owned cells back.

A problem stops at its own fixed point, after exactly its generations (rule110), or at the step
cap. The cap counts steps that change the state: a problem may take `cap` such steps, and one
more step that changes nothing proves its fixed point. A capped problem is reported
converged=False, with no answer.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Callable, NamedTuple

import numpy as np

from .engines.protocol import Engine
from .errors import SeadError
from .tasks import Parsed
from .tasks.base import default_step_cap  # noqa: F401 (the cap of a tape of L cells: default_step_cap(L))
from .tiles import RUN_TILES, TILE, TiledTape

DEEPEN_BELOW_CELLS = 1 << 12  # below this many cells a call's launch cost dwarfs a step: deepen freely
# ONNX Runtime's CPU provider holds about two state-sized buffers per step of a K-step call until
# the call ends (a 201x200 grid, 100 state channels: ~30 MB per step), so a batch deepens K only
# while K x cells x state channels x 4 bytes stays under this. Two 400-digit products went past
# 24 GB at K = 64; capped, they ran in 6.9 GB (README: Grids)
CALL_STATE_BYTES = 1 << 30
DEFAULT_MAX_GENERATIONS = 1_000_000  # a generations task's step cap unless max_steps says otherwise


class Result(NamedTuple):
    """answer is None when the problem did not converge (never a guess)."""

    answer: str | None
    steps: int
    converged: bool


def bucket_shape(task, p: Parsed) -> tuple[int, ...]:
    """The padded cell shape of a short problem's row: a ring at its exact length, a line or a
    grid padded along each axis (bucket_length), so problems of similar shapes share batches."""
    if task.boundary == "ring":
        return task.shape(p)
    return tuple(bucket_length(n) for n in task.shape(p))


def bucket_length(length: int) -> int:
    """The padded length of a short line problem: at least one empty cell past its end (so CPU
    engines can pack rows into one tape), exact up to 64 cells, then multiples of 1/16 of the
    next power of two (at most ~6% wasted cells)."""
    if length < 64:
        return length + 1
    grain = 1 << max(0, length.bit_length() - 5)
    return (length // grain + 1) * grain


Deliver = Callable[[Result], None]
DeliverMany = Callable[[list[tuple[int, Result]]], None]  # (item index, result) pairs, delivered together


class KSchedule:
    """Steps per call: start at the engine's smallest K and go deeper while most work keeps
    running. Where a call holds many cells (one step dwarfs a call's cost), go deeper only once
    4x the next K has run, so steps run past the last one that counts stay under a quarter.
    max_cell_steps: never deeper than K x cells = this (the memory of a call's steps)."""

    def __init__(self, ks: tuple[int, ...], max_cell_steps: int | None = None):
        self.ks, self.depth, self.ran = ks, 0, 0
        self.max_cell_steps = max_cell_steps

    @property
    def k(self) -> int:
        return self.ks[self.depth]

    def after_call(self, most_still_running: bool, cells: int) -> None:
        self.ran += self.k
        deeper = self.depth + 1 < len(self.ks) and (
            self.max_cell_steps is None or self.ks[self.depth + 1] * cells <= self.max_cell_steps)
        if most_still_running and deeper and (cells < DEEPEN_BELOW_CELLS or 4 * self.ks[self.depth + 1] <= self.ran):
            self.depth += 1


class Limits(NamedTuple):
    """How far one problem may run: `evaluations` steps at most; `generations` tasks run exactly
    that many, fixed-point tasks stop at the first step that changes nothing."""

    evaluations: int
    cap: int
    fixed_point: bool

    @classmethod
    def fixed_point_cap(cls, cap: int) -> "Limits":
        """Stop at a fixed point, after at most `cap` changing steps and the one that proves it."""
        return cls(cap + 1, cap, True)

    @classmethod
    def generations(cls, generations: int) -> "Limits":
        return cls(generations, generations, False)


def finish(answer: str | None, steps: int, ran_out: bool, limits: Limits) -> Result:
    """A stopped problem's result. ran_out: it used every evaluation without a step that changed nothing."""
    if limits.fixed_point and ran_out:
        return Result(None, limits.cap, False)
    return Result(answer, steps, True)


class RowJob:
    """Short tapes (or grids) of one padded shape, resident in an engine batch. run() goes call by
    call until every problem has stopped or the time slice is used; it can be resumed on any thread."""

    def __init__(self, engine: Engine, task, items: list[tuple[Parsed, Limits]], deliver: DeliverMany,
                 shape: tuple[int, ...], wrap: bool, state_channels: int):
        self.engine, self.task, self.items, self.shape, self.wrap = engine, task, items, shape, wrap
        self.deliver = deliver  # once per retirement, for all its problems: one lock, not one per problem
        self.batch = None
        self.schedule = KSchedule(engine.k_choices, max_cell_steps=CALL_STATE_BYTES // (4 * state_channels))
        n = len(items)
        self.steps = np.zeros(n, np.int64)
        self.allowed = np.array([limits.evaluations for _, limits in items], np.int64)
        self.rows = np.arange(n)  # the item of each row still in the batch
        self.stopped = self.allowed <= 0  # rule110 with 0 generations
        self.ran_out = np.zeros(n, bool)
        self.row_cells = math.prod(shape)
        self.cells = n * self.row_cells

    def run(self, until: float) -> bool:
        """-> True once every problem has been delivered."""
        if self.batch is None:
            parsed = [p for p, _ in self.items]
            self.batch = self.engine.start(self.task.encode_many(parsed, self.shape), wrap=self.wrap,
                                           settle=self.items[0][1].fixed_point)
        try:
            while True:
                if self._retire():
                    self.batch.close()
                    return True
                self._call()
                if time.perf_counter() >= until:
                    return False
        except BaseException:
            self.batch.close()
            raise

    def abandon(self) -> None:
        """Stop without delivering (every caller cancelled): release the batch."""
        if self.batch is not None:
            self.batch.close()

    def _retire(self) -> bool:
        """Deliver stopped problems once they are half the batch (or all of it). -> all done."""
        stopped = self.stopped[self.rows]
        if 2 * stopped.sum() < max(len(self.rows), 1) or not stopped.any():
            return False
        done = self.rows[stopped]
        items = self.items
        answers = self.task.decode_many(self.batch.symbols()[stopped], [items[i][0] for i in done.tolist()])
        self.deliver([(i, finish(answer, steps, ran_out, items[i][1])) for i, answer, steps, ran_out in
                      zip(done.tolist(), answers, self.steps[done].tolist(), self.ran_out[done].tolist())])
        if stopped.all():
            return True
        self.batch.keep(np.flatnonzero(~stopped))
        self.rows = self.rows[~stopped]
        return False

    def _call(self) -> None:
        rows, k = self.rows, self.schedule.k
        ran = np.minimum(self.allowed[rows] - self.steps[rows], k)
        last = self.batch.advance(ran, k)
        fixed_point = self.items[0][1].fixed_point
        counted = last if fixed_point else ran
        self.steps[rows] += counted
        settled = counted < ran  # a step in the call changed nothing: an exact fixed point
        out = ~settled & (self.steps[rows] >= self.allowed[rows])
        self.ran_out[rows[out]] = True
        newly = settled | out
        self.stopped[rows[newly]] = True
        self.schedule.after_call(newly.sum() * 2 < len(rows), len(rows) * self.row_cells)


class Chunk(NamedTuple):
    """Rows of one tape that one engine batch runs: spans of owned cells, all padded to row_length."""

    spans: list[tuple[int, int]]
    row_length: int


class TapeJob:
    """One long tape in tiles. start() and each chunk return the chunks that can run next: a
    round's chunks run side by side, and the last one to finish plans the next round."""

    def __init__(self, engine: Engine, task, problem: Parsed, limits: Limits, deliver: Deliver, ring: bool,
                 state_channels: int, tile: int = TILE, run_tiles: int = RUN_TILES, state_code: str = "sign"):
        self.engine, self.task, self.problem, self.limits, self.deliver = engine, task, problem, limits, deliver
        self.ring, self.state_channels, self.tile, self.run_tiles = ring, state_channels, tile, run_tiles
        self.state_code = state_code
        self.schedule = KSchedule(engine.k_choices)
        self.steps, self.k_run = 0, 0
        self.tape: TiledTape | None = None
        self.lock = threading.Lock()
        self.pending, self.results, self.last = 0, [], 0
        self.reading = False
        self.symbols: np.ndarray | None = None
        self.ran_out = False
        self.failed = False  # set by the scheduler when a chunk raised: its other chunks are dropped
        self.cell_steps = 0  # cells x steps the engine ran for this tape, halos and padding included

    # -- progress, for display ---------------------------------------------------------------------
    def progress(self) -> dict:
        tape = self.tape
        return {"cells": self.problem.length, "steps": self.steps,
                "active_tiles": int(tape.active.sum()) if tape is not None else 0,
                "tiles": tape.tiles if tape is not None else 0, "cell_steps": self.cell_steps}

    # -- rounds --------------------------------------------------------------------------------
    def start(self) -> list[Chunk]:
        cells = self.task.encode_cells([self.problem], self.problem.length)[0]
        self.tape = TiledTape(cells, self.task.input_channels, self.state_channels, self.ring, self.tile, self.run_tiles,
                              self.state_code)
        if self.limits.evaluations <= 0:  # rule110 with 0 generations
            return self._readout()
        return self._round()

    def _round(self) -> list[Chunk]:
        # at most a tile's width per call, as the activity rule (runtime/tiles.py) needs, and
        # halos short enough that a one-tile row fits the engine
        widest = (self.engine.max_row_cells - self.tape.tile - 1) // 2
        self.k_run = min(self.schedule.k, self.tape.tile, widest, self.limits.evaluations - self.steps)
        spans = self.tape.spans(self.engine.max_row_cells - 2 * self.k_run - 1)
        return self._chunks(spans, self.k_run)

    def _readout(self) -> list[Chunk]:
        self.reading = True
        self.symbols = np.zeros(self.tape.length, np.uint8)
        return self._chunks(self.tape.all_spans(self.engine.max_row_cells - 1), 0)

    def _chunks(self, spans: list[tuple[int, int]], halo: int) -> list[Chunk]:
        """Group rows into batches of about the engine's preferred size; similar widths together."""
        if not spans:  # a round always has a hot tile's neighbourhood to run, or it would not start
            raise SeadError("internal error: a tiled tape has no active tiles left to run")
        spans = sorted(spans, key=lambda s: s[0] - s[1])
        chunks, group = [], []
        for span in spans:
            width = self.tape.window_length(span, halo)
            row_length = self.tape.window_length(group[0], halo) if group else width
            rows = len(group) + 1
            if group and (rows * row_length > self.engine.batch_cells or rows > self.engine.max_rows(row_length)):
                chunks.append(Chunk(group, self.tape.window_length(group[0], halo)))
                group = []
            group.append(span)
        if group:
            chunks.append(Chunk(group, self.tape.window_length(group[0], halo)))
        with self.lock:
            self.pending, self.results, self.last = len(chunks), [], 0
        return chunks

    def run_chunk(self, chunk: Chunk) -> list[Chunk]:
        """Run one chunk; the last chunk of a round ends it. -> the chunks that can run next."""
        if self.reading:
            problem, state = self.tape.readout_rows(chunk.spans, chunk.row_length)
            batch = self.engine.start(problem, state)
            try:
                symbols = batch.symbols()
            finally:
                batch.close()
            for row, (a, b) in enumerate(chunk.spans):
                self.symbols[a:b] = symbols[row, : b - a]
            with self.lock:
                self.pending -= 1
                if self.pending:
                    return []
            answer = self.task.decode_many(self.symbols[None], [self.problem])[0]
            self.deliver(finish(answer, self.steps, self.ran_out, self.limits))
            return []
        halo, k = self.k_run, self.schedule.k
        problem, state, owned = self.tape.gather(chunk.spans, halo, chunk.row_length)
        batch = self.engine.start(problem, state, owned)
        try:
            last = batch.advance(np.full(len(chunk.spans), halo, np.int64), k)
            results = self.tape.owned_results(chunk.spans, halo, batch.state(), batch.hot())
        finally:
            batch.close()
        with self.lock:
            self.results += results
            self.last = max(self.last, int(last.max()))
            self.cell_steps += len(chunk.spans) * chunk.row_length * halo
            self.pending -= 1
            if self.pending:
                return []
        return self._end_round()

    def _end_round(self) -> list[Chunk]:
        hot = self.tape.apply(self.results)
        ran = self.k_run
        counted = self.last if self.limits.fixed_point else ran
        if self.limits.fixed_point and hot != (counted == ran):
            raise SeadError(f"engine '{self.engine.name}' is inconsistent: its hot cells and its last changed "
                            "steps disagree")
        self.steps += counted
        settled = counted < ran
        self.ran_out = not settled and self.steps >= self.limits.evaluations
        if not hot and not self.limits.fixed_point:
            # nothing changed at the final step: a fixed point, so the remaining generations change
            # nothing either (and no tile would run them)
            self.steps = self.limits.evaluations
        self.schedule.after_call(True, int(self.tape.active.sum()) * self.tape.tile)
        if settled or self.steps >= self.limits.evaluations:
            return self._readout()
        return self._round()
