"""A long tape at rest, compact, cut into tiles that run only where something can still change.

At rest a tape is one uint8 code per cell (0 an empty cell, 1 + s the task's symbol s) and one
state code per cell (runtime/rule.py: a sign state's bits, or a symbol state's class), about 2-3
bytes a cell. Before the first step there is no state (`states` is None).

The tape is cut into tiles of TILE cells. A call of k steps runs the active tiles: each run of
consecutive active tiles (at most RUN_TILES of them) becomes one row, its window, which is the
run's own cells with a halo of k cells on each side (wrapping around a ring) and one empty cell at
its end. Rows with cut edges are exact on the cells they own: information moves one cell per
step, so in k steps a cut edge corrupts at most the k halo cells next to it.

Which tiles run (the activity rule). A cell changes at step t+1 only if a cell within one cell of
it changed at step t: the rule is deterministic and the same at every step. The engine reports
the cells that changed at a row's final step ("hot"). A tile without a hot cell, whose neighbour
tiles have none either, cannot change during the next call of at most TILE steps: a change would
have to travel there from a hot cell further than one tile away. So the next call runs exactly
the tiles that are hot or next to a hot tile, and a tile is skipped only when skipping it changes
nothing. The tape has reached its fixed point when no tile is hot.
"""
from __future__ import annotations

import numpy as np

TILE = 64        # cells per tile: the activity grain; at least the deepest K a call runs
RUN_TILES = 64   # at most this many consecutive active tiles per row (4,096 owned cells)


class TiledTape:
    def __init__(self, codes: np.ndarray, ring: bool, tile: int = TILE, run_tiles: int = RUN_TILES):
        """codes: (L,) uint8, the task's codes of one problem (0 empty, 1 + symbol)."""
        self.codes = np.ascontiguousarray(codes, np.uint8)
        self.length = len(codes)
        self.ring, self.tile, self.run_tiles = ring, tile, run_tiles
        self.states: np.ndarray | None = None  # (L,) state codes, once a step has run
        self.active = np.ones(-(-self.length // tile), bool)

    @property
    def tiles(self) -> int:
        return len(self.active)

    def spans(self, max_cells: int | None = None) -> list[tuple[int, int]]:
        """The owned cell ranges [a, b) of this call's rows: runs of active tiles, split at
        run_tiles tiles, or fewer so that a span holds at most max_cells cells."""
        run = self.run_tiles if max_cells is None else max(1, min(self.run_tiles, max_cells // self.tile))
        edges = np.flatnonzero(np.diff(np.concatenate(([False], self.active, [False])).astype(np.int8)))
        spans = []
        for first, end in zip(edges[::2].tolist(), edges[1::2].tolist()):
            for lo in range(first, end, run):
                hi = min(end, lo + run)
                spans.append((lo * self.tile, min(hi * self.tile, self.length)))
        return spans

    def window_length(self, span: tuple[int, int], halo: int) -> int:
        """Cells in the row of a span: the span, a halo each side, and the empty cell at its end."""
        return span[1] - span[0] + 2 * halo + 1

    def gather(self, spans: list[tuple[int, int]], halo: int, row_length: int):
        """-> codes (R, row_length) uint8, state codes (R, row_length) or None before the first
        step, owned (R, row_length) bool, for the rows of `spans`, padded with empty cells."""
        starts = np.array([a - halo for a, _ in spans], np.int64)
        widths = np.array([b - a + 2 * halo for a, b in spans], np.int64)
        columns = np.arange(row_length, dtype=np.int64)
        index = starts[:, None] + columns
        valid = columns < widths[:, None]
        if self.ring:
            index %= self.length
        else:  # beyond a line tape's ends lie empty cells
            valid &= (index >= 0) & (index < self.length)
            np.clip(index, 0, self.length - 1, out=index)
        codes = np.where(valid, self.codes[index], np.uint8(0))
        states = None if self.states is None else self.states[index]  # empty cells' states are never read
        owned = (columns >= halo) & (columns < widths[:, None] - halo)
        return codes, states, owned

    def owned_results(self, spans: list[tuple[int, int]], halo: int, states: np.ndarray, hot: np.ndarray):
        """The rows' results on the cells they own: -> [(span, state codes (n,), hot tiles)]."""
        out = []
        for row, (a, b) in enumerate(spans):
            owned = slice(halo, halo + b - a)
            cells_hot = hot[row, owned]
            pad = -len(cells_hot) % self.tile
            tiles_hot = np.concatenate([cells_hot, np.zeros(pad, bool)]).reshape(-1, self.tile).any(axis=1)
            out.append(((a, b), states[row, owned], tiles_hot))
        return out

    def apply(self, results) -> bool:
        """Store a call's owned results and choose the next call's tiles. -> whether any tile is hot."""
        hot = np.zeros(self.tiles, bool)
        for (a, b), states, tiles_hot in results:
            if self.states is None:
                self.states = np.zeros(self.length, states.dtype)
            self.states[a:b] = states
            hot[a // self.tile: a // self.tile + len(tiles_hot)] = tiles_hot
        active = hot.copy()
        active[1:] |= hot[:-1]
        active[:-1] |= hot[1:]
        if self.ring and self.tiles > 1:
            active[0] |= hot[-1]
            active[-1] |= hot[0]
        self.active = active
        return bool(hot.any())

    def all_spans(self, max_cells: int | None = None) -> list[tuple[int, int]]:
        step = self.tile * (self.run_tiles if max_cells is None else max(1, min(self.run_tiles, max_cells // self.tile)))
        return [(a, min(a + step, self.length)) for a in range(0, self.length, step)]
