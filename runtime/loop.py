"""The convergence loop, written once above the engines (runtime/engines/protocol.py).

Two kinds of job, both advancing K steps per engine call and reading only small per-row numbers
back to decide what happens next:

- RowJob: problems of one padded shape, resident in an engine batch until each has stopped.
  Finished problems leave the batch once they are half of it; once fewer than a quarter of its
  rows are left, they go on in a new batch of their own, the state crossing as codes. A long
  problem may run here for its first steps only (its dense limit): most settle in a few steps,
  all cells busy, which whole rows batched together run fastest; one still changing then is
  handed over, state codes and steps, to a TapeJob.
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
from typing import Callable, NamedTuple, Sequence

import numpy as np

from .engines.protocol import Engine
from .errors import InternalError
from .tasks import Parsed, Problems
from .tiles import GRID_TILE, RUN_TILES, TILE, TiledGrid, TiledTape

DEEPEN_BELOW_CELLS = 1 << 12  # below this many cells a call's launch cost dwarfs a step: deepen freely
FIRST_K = 4  # calls start this deep (the engines also offer 1 and 2, for the last steps of generations)
DEFAULT_MAX_GENERATIONS = 1_000_000  # a generations task's step cap unless max_steps says otherwise


class Result(NamedTuple):
    """answer is None when the problem did not converge (never a guess)."""

    answer: str | None
    steps: int
    converged: bool


class Results(Sequence):
    """The Results of many problems, in input order, kept as arrays: answers (list of str or None),
    steps (n,) int64, converged (n,) bool. Indexing gives a Result; it equals any sequence of
    equal Results."""

    def __init__(self, answers: list, steps: np.ndarray, converged: np.ndarray):
        self.answers, self.steps, self.converged = answers, steps, converged

    def __len__(self) -> int:
        return len(self.answers)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Results(self.answers[i], self.steps[i], self.converged[i])
        return Result(self.answers[i], int(self.steps[i]), bool(self.converged[i]))

    def __iter__(self):
        return map(Result, self.answers, self.steps.tolist(), self.converged.tolist())

    def __eq__(self, other) -> bool:
        if isinstance(other, Results):
            return self.answers == other.answers and np.array_equal(self.steps, other.steps) \
                and np.array_equal(self.converged, other.converged)
        try:
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        except TypeError:
            return NotImplemented

    def __repr__(self) -> str:
        shown = ", ".join(map(repr, list(self[:3])))
        return f"Results([{shown}{', ...' if len(self) > 3 else ''}], n={len(self)})"

    @classmethod
    def concat(cls, parts: list["Results"]) -> "Results":
        if not parts:
            return cls([], np.zeros(0, np.int64), np.zeros(0, bool))
        return cls([a for p in parts for a in p.answers], np.concatenate([p.steps for p in parts]),
                   np.concatenate([p.converged for p in parts]))


def bucket_shape(boundary: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The padded cell shape of a short problem's row: a ring at its exact length, a line or a
    grid padded along each axis (bucket_length), so problems of similar shapes share batches."""
    if boundary == "ring":
        return tuple(shape)
    return tuple(bucket_length(n) for n in shape)


def bucket_length(length: int) -> int:
    """The padded length of a short line problem: at least one empty cell past its end (what lies
    beyond a problem, and the protocol's rule for rows), exact up to 64 cells, then multiples of
    1/16 of the largest power of two at or below it (at most ~6% wasted cells)."""
    if length < 64:
        return length + 1
    grain = 1 << max(0, length.bit_length() - 5)
    return (length // grain + 1) * grain


def bucket_lengths(lengths: np.ndarray) -> np.ndarray:
    """bucket_length of each of (n,) int64 lengths."""
    lengths = np.asarray(lengths, np.int64)
    bits = np.zeros_like(lengths)
    big = lengths >= 64
    if big.any():
        bits[big] = np.floor(np.log2(lengths[big])).astype(np.int64) + 1
        # log2 can round at exact powers of two: fix by the definition of bit_length
        bits[big] += (lengths[big] >> bits[big]) > 0
        bits[big] -= (lengths[big] >> np.maximum(bits[big] - 1, 0)) == 0
    grain = np.left_shift(1, np.maximum(0, bits - 5))
    return np.where(big, (lengths // grain + 1) * grain, lengths + 1)


class KSchedule:
    """Steps per call: start at FIRST_K and go deeper while most work keeps running. Where a call
    holds many cells (one step dwarfs a call's cost), go deeper only once 4x the next K has run,
    so steps run past the last one that counts stay under a quarter."""

    def __init__(self, ks: tuple[int, ...]):
        self.ks = ks
        self.depth = next((i for i, k in enumerate(ks) if k >= FIRST_K), len(ks) - 1)
        self.ran = 0

    @property
    def k(self) -> int:
        return self.ks[self.depth]

    def after_call(self, most_still_running: bool, cells: int) -> None:
        self.ran += self.k
        deeper = self.depth + 1 < len(self.ks)
        if most_still_running and deeper and (cells < DEEPEN_BELOW_CELLS or 4 * self.ks[self.depth + 1] <= self.ran):
            self.depth += 1


def step_choice(ks: tuple[int, ...], k: int, most: int) -> int:
    """The deepest of the engine's K that is at most min(k, most) (1 is always offered)."""
    return max(c for c in ks if c <= max(1, min(k, most)))


def split_by_part(offsets: np.ndarray, rows: np.ndarray, slots: np.ndarray | None = None):
    """Rows numbered across parts (part p holds rows offsets[p] to offsets[p + 1] - 1) -> (part,
    slots) for each part that holds some of rows[slots] (slots: positions into rows, ascending;
    None: all), with the positions of its rows."""
    if slots is None:
        slots = np.arange(len(rows))
    if len(offsets) == 2:  # one part: the usual batch of one request
        return [(0, slots)] if len(slots) else []
    part_of = np.searchsorted(offsets, rows[slots], side="right") - 1
    starts = np.flatnonzero(np.diff(part_of, prepend=-1))  # rows ascend, so each part is one run
    return [(int(part_of[a]), slots[a:b]) for a, b in zip(starts.tolist(), [*starts[1:].tolist(), len(slots)])]


# deliver(rows, answers, steps, converged): rows (m,) int64 into the job's problems
DeliverRows = Callable[[np.ndarray, list, np.ndarray, np.ndarray], None]
# hand_over(rows, state codes (m, *shape), steps (m,)): problems that reached their dense limit
HandOver = Callable[[np.ndarray, np.ndarray, np.ndarray], None]


class RowJob:
    """Short problems of one padded shape, resident in an engine batch. run() goes call by call
    until every problem has stopped or the time slice is used; it can be resumed on any thread.

    parts: the problems, in parts (as they were queued); rows are numbered across the parts in
    order. evaluations (n,) int64: steps each may take (a fixed-point task's cap + 1, or a
    generations task's count); caps (n,) int64: the cap reported for a problem that ran out.
    dense_limits (n,) int64 or None: after this many steps a problem still changing stops here
    and goes to hand_over, with its state codes and steps, instead of being delivered."""

    def __init__(self, engine: Engine, task, parts: list[Problems], evaluations: np.ndarray, caps: np.ndarray,
                 deliver: DeliverRows, shape: tuple[int, ...], dense_limits: np.ndarray | None = None,
                 hand_over: HandOver | None = None):
        self.engine, self.task, self.parts, self.shape = engine, task, parts, shape
        self.offsets = np.cumsum([0] + [len(p) for p in parts])
        self.deliver = deliver
        self.fixed_point = task.convergence == "fixed_point"
        self.batch, self.codes, self.batch_rows = None, None, 0
        self.schedule = KSchedule(engine.k_choices)
        n = int(self.offsets[-1])
        self.steps = np.zeros(n, np.int64)
        self.allowed, self.caps = np.asarray(evaluations, np.int64), np.asarray(caps, np.int64)
        self.rows = np.arange(n)  # the problem of each row still in the batch
        self.stopped = self.allowed <= 0  # rule110 with 0 generations
        self.ran_out = np.zeros(n, bool)
        self.dense_limits, self.hand_over = dense_limits, hand_over
        self.handed = np.zeros(n, bool)  # stopped here, delivered by a TapeJob
        self.row_cells = math.prod(shape)
        self.cells = n * self.row_cells

    def run(self, until: float) -> bool:
        """-> True once every problem has been delivered."""
        if self.batch is None:
            self.codes = np.concatenate([self.task.codes(p, np.arange(len(p)), self.shape) for p in self.parts])
            self._start(self.codes)
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

    def _start(self, codes: np.ndarray, state_codes: np.ndarray | None = None) -> None:
        self.batch = self.engine.start(codes, wrap=self.task.boundary == "ring", generations=not self.fixed_point,
                                       state_codes=state_codes)
        self.batch_rows = len(codes)

    def abandon(self) -> None:
        """Stop without delivering (every caller cancelled): release the batch."""
        if self.batch is not None:
            self.batch.close()

    def _retire(self) -> bool:
        """Deliver stopped problems once they are half the batch (or all of it). -> all done."""
        stopped = self.stopped[self.rows]
        if 2 * stopped.sum() < max(len(self.rows), 1) or not stopped.any():
            return False
        ending = stopped & ~self.handed[self.rows]  # the stopped rows this job delivers
        done = self.rows[ending]
        out = self.ran_out[done]
        answers = [None] * len(done)
        if len(done) and not out.all():
            classes = self.batch.classes()[ending]
            answered = np.flatnonzero(~out)
            for part, slots in split_by_part(self.offsets, done, answered):
                decoded = self.task.decode_classes(classes[slots], self.parts[part], done[slots] - self.offsets[part])
                if len(slots) == len(done):
                    answers = decoded
                else:
                    for slot, answer in zip(slots.tolist(), decoded):
                        answers[slot] = answer
        if len(done):
            self.deliver(done, answers, np.where(out, self.caps[done], self.steps[done]), ~out)
        if stopped.all():
            return True
        self.rows = self.rows[~stopped]
        if 4 * len(self.rows) >= self.batch_rows:
            self.batch.keep(np.flatnonzero(~stopped))  # idle rows run on and cost at most 3x the live ones
        else:  # a smaller batch: at most log4(B) times a job; the state crosses as codes, 1-2 bytes a cell
            state_codes = self.batch.state_codes()[~stopped]
            self.batch.close()
            self._start(self.codes[self.rows], state_codes)
        return False

    def _call(self) -> None:
        rows, k = self.rows, self.schedule.k
        ran = np.minimum(self.allowed[rows] - self.steps[rows], k)
        ran[self.stopped[rows]] = 0  # a stopped row may run on in the batch; its steps are final
        if not self.fixed_point:
            self.batch.advance(k, ran)
            counted = ran
        else:
            counted = np.minimum(self.batch.advance(k), ran)  # it may have run on past its allowance
        self.steps[rows] += counted
        settled = counted < ran  # a step in the call changed nothing: an exact fixed point
        out = ~settled & (self.steps[rows] >= self.allowed[rows])
        if self.fixed_point:
            self.ran_out[rows[out]] = True
        self.stopped[rows[settled | out]] = True
        if self.dense_limits is not None:
            self._hand_over(np.flatnonzero(~self.stopped[rows] & (self.steps[rows] >= self.dense_limits[rows])))
        self.schedule.after_call(self.stopped[rows].sum() * 2 < len(rows), len(rows) * self.row_cells)

    def _hand_over(self, slots: np.ndarray) -> None:
        """Batch rows `slots`, still changing at their dense limit, leave for tiles: their state
        codes now (a call's last step was their last, so the state is at their step count)."""
        if not len(slots):
            return
        rows = self.rows[slots]
        self.stopped[rows] = self.handed[rows] = True
        self.hand_over(rows, self.batch.state_codes()[slots], self.steps[rows])


class Chunk(NamedTuple):
    """Windows of one tiled problem that one engine call runs: spans of owned cells, each window
    padded with empty cells to `shape` ((L,) on a tape, (H, W) on a grid)."""

    spans: list[tuple]
    shape: tuple[int, ...]


class TapeJob:
    """One long tape (or a large grid) in tiles. start() and each chunk return the chunks that can
    run next: a round's chunks run side by side, and the last one to finish plans the next round.

    evaluations: steps it may take (cap + 1, or its generations); cap: reported if it runs out.
    states, steps: where a RowJob handed it over (state codes of shape(problem), steps taken)."""

    def __init__(self, engine: Engine, task, problem: Parsed, evaluations: int, cap: int,
                 deliver: Callable[[Result], None], tile: int = TILE, run_tiles: int = RUN_TILES,
                 states: np.ndarray | None = None, steps: int = 0):
        self.engine, self.task, self.problem, self.deliver = engine, task, problem, deliver
        self.evaluations, self.cap = evaluations, cap
        self.fixed_point = task.convergence == "fixed_point"
        self.ring = task.boundary == "ring"
        self.tile, self.run_tiles = tile, run_tiles
        self.schedule = KSchedule(engine.k_choices)
        self.steps, self.k_run = steps, 0
        self.start_states = states
        self.tape: TiledTape | TiledGrid | None = None
        self.lock = threading.Lock()
        self.pending, self.results = 0, []
        self.reading = False
        self.classes: np.ndarray | None = None
        self.ran_out = False
        self.failed = False  # set by the scheduler when a chunk raised: its other chunks are dropped
        self.cell_steps = 0  # cells x steps the engine ran for this tape, halos and padding included

    # -- progress, for display ---------------------------------------------------------------------
    def progress(self) -> dict:
        tape = self.tape
        return {"cells": self.problem.length, "steps": self.steps,
                "active_tiles": tape.active_tiles if tape is not None else 0,
                "tiles": tape.tiles if tape is not None else 0, "cell_steps": self.cell_steps}

    # -- rounds --------------------------------------------------------------------------------
    def start(self) -> list[Chunk]:
        shape = tuple(self.task.shape(self.problem))
        codes = self.task.codes(Problems.from_parsed(self.task, [self.problem]), np.zeros(1, np.int64), shape)[0]
        if self.task.rank == 2:
            self.tape = TiledGrid(codes, GRID_TILE, bands=max(1, self.engine.workers))
        else:
            self.tape = TiledTape(codes, self.ring, self.tile, self.run_tiles)
        self.tape.states, self.start_states = self.start_states, None  # every tile starts active
        if self.evaluations <= self.steps:  # rule110 with 0 generations
            return self._readout()
        return self._round()

    def _round(self) -> list[Chunk]:
        # at most a tile's width per call, as the activity rule (runtime/tiles.py) needs, and
        # halos short enough that a one-tile row fits the engine
        widest = (self.engine.max_row_cells - self.tape.tile - 1) // 2
        # a grid window has a halo on four sides: half a tile keeps it to a fraction of the box
        deepest = self.tape.tile if self.tape.rank == 1 else self.tape.tile // 2
        self.k_run = step_choice(self.engine.k_choices, self.schedule.k, min(deepest, widest,
                                                                            self.evaluations - self.steps))
        spans = self.tape.spans(self.engine.max_row_cells, self.k_run)
        return self._chunks(spans, self.k_run)

    def _readout(self) -> list[Chunk]:
        self.reading = True
        self.classes = np.zeros(self.tape.codes.shape, np.uint8)
        return self._chunks(self.tape.all_spans(self.engine.max_row_cells - 1), 0)

    def _chunks(self, spans: list[tuple], halo: int) -> list[Chunk]:
        """Group windows into batches of about the engine's preferred size; similar sizes together,
        each padded to the group's largest shape."""
        if not spans:  # a round always has a hot tile's neighbourhood to run, or it would not start
            raise InternalError("a tiled problem has no active tiles left to run")
        spans = sorted(spans, key=lambda s: -self.tape.window_length(s, halo))
        chunks, group, shape = [], [], None
        for span in spans:
            wider = tuple(np.maximum(shape, self.tape.window_shape(span, halo))) if group else \
                self.tape.window_shape(span, halo)
            cells, rows = math.prod(wider), len(group) + 1
            if group and (rows * cells > self.engine.batch_cells or rows > self.engine.max_rows(cells)):
                chunks.append(Chunk(group, shape))
                group, wider = [], self.tape.window_shape(span, halo)
            group.append(span)
            shape = tuple(int(n) for n in wider)
        if group:
            chunks.append(Chunk(group, shape))
        with self.lock:
            self.pending, self.results = len(chunks), []
        return chunks

    def run_chunk(self, chunk: Chunk) -> list[Chunk]:
        """Run one chunk; the last chunk of a round ends it. -> the chunks that can run next."""
        if self.reading:
            codes, states, _ = self.tape.gather(chunk.spans, 0, chunk.shape)
            classes = self.engine.classify(codes, states)
            for row, span in enumerate(chunk.spans):
                self.classes[self.tape.region(span)] = classes[row][self.tape.window_region(span, 0)]
            with self.lock:
                self.pending -= 1
                if self.pending:
                    return []
            answer = None
            if not (self.fixed_point and self.ran_out):
                answer = self.task.decode_many(self.classes[None], [self.problem])[0]
            self.deliver(finish(answer, self.steps, self.ran_out, self.fixed_point, self.cap))
            return []
        halo, k = self.k_run, self.k_run
        codes, states, owned = self.tape.gather(chunk.spans, halo, chunk.shape)
        new_states, hot = self.engine.run_windows(codes, states, k)
        results = self.tape.owned_results(chunk.spans, halo, new_states, hot)
        with self.lock:
            self.results.append((chunk, codes, states, owned, results))
            self.cell_steps += len(chunk.spans) * math.prod(chunk.shape) * halo
            self.pending -= 1
            if self.pending:
                return []
        return self._end_round()

    def _end_round(self) -> list[Chunk]:
        ran = self.k_run
        hot = self.tape.apply([r for *_, results in self.results for r in results])
        counted = ran
        if self.fixed_point and not hot:
            # nothing changed at the call's last step: the tape settled during it. Which step was
            # its last change? Rerun the round's windows counting changes of owned cells.
            counted = max(self.engine.run_windows(codes, states, ran, owned)[1]
                          for _, codes, states, owned, _ in self.results)
            if counted >= ran:
                raise InternalError(f"engine '{self.engine.name}' is inconsistent: no cell changed at the last step "
                                    f"of a call, yet its count says step {counted} changed one")
        self.results = []
        self.steps += counted
        settled = counted < ran
        self.ran_out = not settled and self.steps >= self.evaluations
        if not hot and not self.fixed_point:
            # nothing changed at the final step: a fixed point, so the remaining generations change
            # nothing either (and no tile would run them)
            self.steps = self.evaluations
        self.schedule.after_call(True, self.tape.active_tiles * self.tape.tile ** self.tape.rank)
        if settled or self.steps >= self.evaluations:
            return self._readout()
        return self._round()


def finish(answer: str | None, steps: int, ran_out: bool, fixed_point: bool, cap: int) -> Result:
    """A stopped problem's result. ran_out: it used every evaluation without a step that changed nothing."""
    if fixed_point and ran_out:
        return Result(None, cap, False)
    return Result(answer, steps, True)
