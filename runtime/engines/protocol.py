"""The engine interface: what the loop (runtime/loop.py) asks of a backend, and nothing more.

An engine runs the graphs derived from one exported step (runtime/graph.py) on some device. The
loop hands it dense float32 rows of one shape per batch; everything about tapes, tiles, halos,
activity, rings, packing and step accounting lives above it, in runtime/loop.py and tiles.py.

Shapes: B rows of L cells. C_in = metadata.input_channels, C_s = metadata.state_channels. On a
grid (metadata.rank 2) a row's cells are (H, W) rather than (L,): read L as H, W below. Grids are
never tiled, packed or wrapped.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np


class Batch(Protocol):
    """B rows resident on the engine's device, with their state, between calls."""

    @property
    def rows(self) -> int:
        """B: rows still in the batch (keep() drops rows)."""

    def advance(self, budget: np.ndarray, k: int) -> np.ndarray:
        """Run min(k, budget[b]) steps on each row b; rows with budget 0 hold their state.

        budget: (B,) int64, each at most k; k must be one of the engine's k_choices.
        -> (B,) int64: the last of those steps (1..k) that changed a cell the row owns; 0 if
        none. For a whole tape this is its count of changing steps in the call."""

    def state(self) -> np.ndarray:
        """-> (B, C_s, L) float32 copy of the current state (-1, 0 or +1 per channel)."""

    def hot(self) -> np.ndarray:
        """-> (B, L) bool: cells that changed at the final step of the last advance()."""

    def symbols(self) -> np.ndarray:
        """-> (B, L) int64: the readout's class per cell for the current state."""

    def keep(self, rows: np.ndarray) -> None:
        """Keep only `rows` (ascending int64 indices into the current rows), in that order."""

    def close(self) -> None:
        """Release the batch's buffers now (device memory, graph slots)."""


class Engine(Protocol):
    name: str                      # "ort", "ort-cuda", "trt"
    k_choices: tuple[int, ...]     # steps per advance() call this engine offers, ascending
    workers: int                   # batches worth running side by side (CPU: one per core)
    batch_cells: int               # cells per batch it runs best at (the loop aims for this)
    max_row_cells: int             # no row may be longer (the loop tiles longer tapes)

    def max_rows(self, length: int) -> int:
        """The most rows of `length` cells one batch may hold (tensor element limits)."""

    def start(self, problem: np.ndarray, state: np.ndarray | None = None, owned: np.ndarray | None = None,
              wrap: bool = False, settle: bool = False) -> Batch:
        """A batch of B rows. problem (B, C_in, L) float32, channel 0 the cell mask; state
        (B, C_s, L) float32, zeros (the state before the first step) when None; owned (B, 1, L)
        float32, 1 where a cell's changes count (None: every cell). wrap: each row is a whole ring.

        settle: each row is a whole problem of a fixed-point task, and the caller reads only what
        advance() returns, symbols(), and the state of rows that settled (advance() returned less
        than their budget). The engine may then let a row run past its budget, returning
        min(its changing steps, budget), and skip the per-step bookkeeping; hot() is then
        undefined. An engine may ignore the flag: its exact budgets satisfy the caller too."""

    def close(self) -> None:
        """Release sessions, thread pools and device memory. The engine is unusable afterwards."""


def hot_cells(changed_at: np.ndarray, budget: np.ndarray) -> np.ndarray:
    """Batch.hot() from the advance graph's outputs: (B, *S) bool, the cells whose last change
    (changed_at (B, *S), 0 for none) was at their row's final step (budget (B,) of that call)."""
    budget = np.asarray(budget, np.float32).reshape(-1, *[1] * (changed_at.ndim - 1))
    return (changed_at == budget) & (budget > 0)
