"""The engine interface: what the loop (runtime/loop.py) asks of a backend, and nothing more.

An engine runs the graphs built from one exported step (runtime/graph/) on some device. Codes
go in and classes come out: a cell is one uint8 code (0 an empty cell, 1 + s the task's symbol s)
and the readout one uint8 class; a cell's state at rest is one integer code (Rule.code_dtype;
runtime/rule.py). Everything about tapes, tiles, activity, rings, bucketing and step accounting
lives above the engine, in runtime/loop.py and tiles.py.

Shapes: B rows of S cells, S = (L,) on a tape and (H, W) on a grid. Unless a row wraps (a ring),
its last cell is empty (a grid: its last row and its last column are), so what lies beyond the
row is what lies beyond a problem.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np


class Batch(Protocol):
    """B whole problems resident on the engine's device, with their state, between calls."""

    @property
    def rows(self) -> int:
        """B: rows still in the batch (keep() drops rows)."""

    def advance(self, k: int, budget: np.ndarray | None = None) -> np.ndarray:
        """Run k steps (one of the engine's k_choices).

        A batch started with generations=True runs min(k, budget[b]) steps on row b (budget (B,)
        int64) and then holds its state. Otherwise (whole problems of a fixed-point task) every
        row runs k steps and `budget` is ignored: a row that settled stays settled.
        -> (B,) int64: the last of the steps run that changed the row, 0 if none; for a whole
        problem, its count of changing steps in the call."""

    def classes(self) -> np.ndarray:
        """-> (B, *S) uint8: the readout's class of every cell for the current state."""

    def state_codes(self) -> np.ndarray:
        """-> (B, *S) (Rule.code_dtype): every cell's state code, what start() takes to go on."""

    def keep(self, rows: np.ndarray) -> None:
        """Keep only `rows` (ascending int64 indices into the current rows), in that order. The
        rows dropped may run on, idle, until the batch closes (the loop starts a smaller batch
        from state_codes() once few rows are left)."""

    def close(self) -> None:
        """Release the batch's buffers now."""


class Engine(Protocol):
    name: str                      # "ort", "ort-cuda", "trt"
    k_choices: tuple[int, ...]     # steps per call this engine offers, ascending, 1 and 2 included
    workers: int                   # batches worth running side by side (CPU: one per core)
    batch_cells: int               # cells per batch it runs best at (the loop aims for this)
    max_row_cells: int             # no row may be longer (the loop tiles longer tapes)

    def max_rows(self, row_cells: int) -> int:
        """The most rows of `row_cells` cells one call may hold: every tensor it makes stays under
        2^31 elements (0 if even one row would not)."""

    def start(self, codes: np.ndarray, wrap: bool = False, generations: bool = False,
              state_codes: np.ndarray | None = None) -> Batch:
        """A batch of whole problems. codes (B, *S) uint8. wrap: each row is a ring. generations:
        advance() honours per-row budgets exactly (a task run for N steps). state_codes (B, *S):
        where each row goes on from (a Batch.state_codes() row; zero_code everywhere on a row
        before its first step); None: every row from its first step."""

    def run_windows(self, codes: np.ndarray, state_codes: np.ndarray | None, k: int,
                    owned: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | int]:
        """Tile windows of a long tape (runtime/tiles.py): rows (R, W) of codes and state codes
        (None: before the first step), each ending in an empty cell; exactly k steps on every row.
        -> (state codes (R, W) after them, hot (R, W) bool: the cells that changed at step k).
        With `owned` (R, W) bool: -> (state codes, the last of the k steps at which an owned cell
        changed, 0 if none)."""

    def classify(self, codes: np.ndarray, state_codes: np.ndarray | None) -> np.ndarray:
        """(R, W) codes and state codes (None: before the first step) -> (R, W) uint8 classes."""

    def close(self) -> None:
        """Release sessions, thread pools and device memory. The engine is unusable afterwards."""
