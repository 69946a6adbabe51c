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

# a Runtime's tiles hold max(TILE, its engine's deepest K) cells: a call runs at most a tile's width of steps
TILE = 64        # cells per tile at least
RUN_TILES = 64   # at most this many consecutive active tiles per row
GRID_TILE = 16   # a grid's tiles are GRID_TILE x GRID_TILE cells


class TiledTape:
    rank = 1

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

    @property
    def active_tiles(self) -> int:
        return int(np.count_nonzero(self.active))

    def spans(self, max_cells: int | None = None, halo: int = 0) -> list[tuple[int, int]]:
        """The owned cell ranges [a, b) of this call's rows: runs of active tiles, split at
        run_tiles tiles, or fewer so that a window (the span, its halos, its empty end cell)
        holds at most max_cells cells."""
        if max_cells is not None:
            max_cells -= 2 * halo + 1
        run = self.run_tiles if max_cells is None else max(1, min(self.run_tiles, max_cells // self.tile))
        ids = np.flatnonzero(self.active)
        if not len(ids):
            return []
        breaks = np.flatnonzero(ids[1:] != ids[:-1] + 1)  # a run of active tiles ends at each
        spans = []
        for first, last in zip([int(ids[0])] + ids[breaks + 1].tolist(), ids[breaks].tolist() + [int(ids[-1])]):
            for lo in range(first, last + 1, run):
                hi = min(last + 1, lo + run)
                spans.append((lo * self.tile, min(hi * self.tile, self.length)))
        return spans

    def window_length(self, span: tuple[int, int], halo: int) -> int:
        """Cells in the row of a span: the span, a halo each side, and the empty cell at its end."""
        return span[1] - span[0] + 2 * halo + 1

    def window_shape(self, span: tuple[int, int], halo: int) -> tuple[int, ...]:
        return (self.window_length(span, halo),)

    def region(self, span: tuple[int, int]):
        """Where a span's cells lie in tape-shaped arrays; window_region: in its window row."""
        return np.s_[span[0]: span[1]]

    def window_region(self, span: tuple[int, int], halo: int):
        return np.s_[halo: halo + span[1] - span[0]]

    def gather(self, spans: list[tuple[int, int]], halo: int, shape: tuple[int, ...]):
        """-> codes (R, row_length) uint8, state codes (R, row_length) or None before the first
        step, owned (R, row_length) bool, for the rows of `spans`, padded with empty cells (whose
        state codes are never read: 0 here)."""
        (row_length,) = shape
        codes = np.zeros((len(spans), row_length), np.uint8)
        states = None if self.states is None else np.zeros((len(spans), row_length), self.states.dtype)
        owned = np.zeros((len(spans), row_length), bool)
        for row, (a, b) in enumerate(spans):  # a round has few rows, or rows long enough to cost more
            lo, hi = a - halo, b + halo
            if self.ring:  # the window wraps around the ring
                cells = np.arange(lo, hi) % self.length
                codes[row, : hi - lo] = self.codes[cells]
                if states is not None:
                    states[row, : hi - lo] = self.states[cells]
            else:  # beyond a line tape's ends lie empty cells
                first, last = max(lo, 0), min(hi, self.length)
                codes[row, first - lo: last - lo] = self.codes[first:last]
                if states is not None:
                    states[row, first - lo: last - lo] = self.states[first:last]
            owned[row, halo: halo + b - a] = True
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


class TiledGrid:
    """A long grid problem (rank 2) at rest, compact, cut into GRID_TILE x GRID_TILE tiles.

    The same activity rule in two dimensions: a cell changes only if a cell within one cell of it
    (its 3x3 neighbourhood) changed at the step before, so after a call of at most a tile's width
    of steps only the hot tiles and their eight neighbours can change. A call runs the bounding
    box of the active tiles, cut into bands of whole tile rows (one per window, so workers can run
    them side by side), each with a halo of k cells on every side and an empty last row and
    column. On a product the active region is a front that shrinks as rows settle: the box follows
    it (runtime/tasks/multiplication.py; docs/grids.md)."""

    rank = 2

    def __init__(self, codes: np.ndarray, tile: int = GRID_TILE, bands: int = 2):
        self.codes = np.ascontiguousarray(codes, np.uint8)  # (H, W)
        self.height, self.width = codes.shape
        self.length = codes.size
        self.tile, self.bands = tile, bands
        self.states: np.ndarray | None = None
        self.active = np.ones((-(-self.height // tile), -(-self.width // tile)), bool)

    @property
    def tiles(self) -> int:
        return self.active.size

    @property
    def active_tiles(self) -> int:
        return int(np.count_nonzero(self.active))

    def _box(self, active: np.ndarray) -> tuple[int, int, int, int]:
        rows, cols = np.flatnonzero(active.any(1)), np.flatnonzero(active.any(0))
        return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1

    def spans(self, max_cells: int | None = None, halo: int = 0) -> list[tuple[int, int, int, int]]:
        """Owned rectangles (r0, r1, c0, c1) in cells: the active tiles' bounding box, in bands of
        whole tile rows (at most `bands`, more if a window would pass max_cells with its halo)."""
        if not self.active.any():
            return []
        t0, t1, u0, u1 = self._box(self.active)
        rows = t1 - t0
        width = (u1 - u0) * self.tile + 2 * halo + 1
        per_band = -(-rows // self.bands)
        if max_cells is not None:
            per_band = max(1, min(per_band, (max_cells // width - 2 * halo - 1) // self.tile))
        out = []
        for a in range(t0, t1, per_band):
            b = min(t1, a + per_band)
            out.append((a * self.tile, min(b * self.tile, self.height), u0 * self.tile, min(u1 * self.tile, self.width)))
        return out

    def window_shape(self, span, halo: int) -> tuple[int, int]:
        r0, r1, c0, c1 = span
        return r1 - r0 + 2 * halo + 1, c1 - c0 + 2 * halo + 1

    def window_length(self, span, halo: int) -> int:
        h, w = self.window_shape(span, halo)
        return h * w

    def region(self, span):
        r0, r1, c0, c1 = span
        return np.s_[r0:r1, c0:c1]

    def window_region(self, span, halo: int):
        r0, r1, c0, c1 = span
        return np.s_[halo: halo + r1 - r0, halo: halo + c1 - c0]

    def gather(self, spans, halo: int, shape: tuple[int, int]):
        """-> codes (R, h, w) uint8, state codes or None, owned (R, h, w) bool: each span's cells
        with the halo, empty beyond the grid and in the padding after."""
        h, w = shape
        rows = np.arange(h)[None, :, None]
        cols = np.arange(w)[None, None, :]
        r0 = np.array([s[0] - halo for s in spans])[:, None, None] + rows
        c0 = np.array([s[2] - halo for s in spans])[:, None, None] + cols
        extent_r = np.array([s[1] - s[0] + 2 * halo for s in spans])[:, None, None]
        extent_c = np.array([s[3] - s[2] + 2 * halo for s in spans])[:, None, None]
        valid = (rows < extent_r) & (cols < extent_c) & (r0 >= 0) & (r0 < self.height) & (c0 >= 0) & (c0 < self.width)
        ri, ci = np.clip(r0, 0, self.height - 1), np.clip(c0, 0, self.width - 1)
        codes = np.where(valid, self.codes[ri, ci], np.uint8(0))
        states = None if self.states is None else self.states[ri, ci]
        owned = (rows >= halo) & (rows < extent_r - halo) & (cols >= halo) & (cols < extent_c - halo)
        return codes, states, np.broadcast_to(owned, codes.shape)

    def owned_results(self, spans, halo: int, states: np.ndarray, hot: np.ndarray):
        out = []
        for row, (r0, r1, c0, c1) in enumerate(spans):
            own = np.s_[row, halo: halo + r1 - r0, halo: halo + c1 - c0]
            cells_hot = hot[own]
            th, tw = -(-(r1 - r0) // self.tile), -(-(c1 - c0) // self.tile)
            padded = np.zeros((th * self.tile, tw * self.tile), bool)
            padded[: r1 - r0, : c1 - c0] = cells_hot
            tiles_hot = padded.reshape(th, self.tile, tw, self.tile).any(axis=(1, 3))
            out.append(((r0, r1, c0, c1), states[own], tiles_hot))
        return out

    def apply(self, results) -> bool:
        """Store a call's owned results and choose the next call's tiles: the hot ones and their
        eight neighbours. -> whether any tile is hot."""
        hot = np.zeros_like(self.active)
        for (r0, r1, c0, c1), states, tiles_hot in results:
            if self.states is None:
                self.states = np.zeros((self.height, self.width), states.dtype)
            self.states[r0:r1, c0:c1] = states
            a, b = r0 // self.tile, c0 // self.tile
            hot[a: a + tiles_hot.shape[0], b: b + tiles_hot.shape[1]] |= tiles_hot
        padded = np.pad(hot, 1)
        active = np.zeros_like(hot)
        for dr in (0, 1, 2):
            for dc in (0, 1, 2):
                active |= padded[dr: dr + hot.shape[0], dc: dc + hot.shape[1]]
        self.active = active
        return bool(hot.any())

    def all_spans(self, max_cells: int | None = None):
        band = self.tile * max(1, (max_cells or self.length) // max(self.width * self.tile, 1))
        return [(a, min(a + band, self.height), 0, self.width) for a in range(0, self.height, band)]
