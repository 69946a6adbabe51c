"""A long tape at rest, compact, cut into tiles that run only where something can still change.

At rest a tape is one int8 symbol per cell (the task's compact code, -1 for an empty cell) and its
state, compact: a sign state bit-packed, one bit per state channel (+1 or -1); a symbol state as
its class, one byte (before the first step the state is all zeros, which `started` says). Memory
at rest is about 2 bytes per cell. Only the rows in flight are
expanded to the float32 tensors an engine reads.

The tape is cut into tiles of TILE cells. A call of k steps runs the active tiles: each run of
consecutive active tiles (at most RUN_TILES of them) becomes one batch row, its window, which is
the run's own cells with a halo of k cells on each side (wrapping around a ring) and one empty
cell at its end. Rows with cut edges are exact on the cells they own: information moves one cell
per step, so in k steps a cut edge corrupts at most the k halo cells next to it.

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

from .tasks import one_hot_cells

TILE = 64        # cells per tile: the activity grain; at least the deepest K, as the rule above needs
RUN_TILES = 64   # at most this many consecutive active tiles per row (4,096 owned cells)


class TiledTape:
    def __init__(self, cells: np.ndarray, input_channels: int, state_channels: int, ring: bool,
                 tile: int = TILE, run_tiles: int = RUN_TILES, state_code: str = "sign"):
        """cells: (L,) int8, the task's encode_cells of one problem; state_code: the model's
        (sead.state), "sign" or "symbol"."""
        self.cells = np.ascontiguousarray(cells, np.int8)
        self.length = len(cells)
        self.c_in, self.c_s, self.ring = input_channels, state_channels, ring
        self.tile, self.run_tiles = tile, run_tiles
        self.symbol = state_code == "symbol"
        if self.symbol and state_channels > 256:
            raise ValueError(f"a symbol state of {state_channels} classes does not fit a byte per cell")
        # sign: bit c of a cell is 1 where channel c is +1; symbol: the cell's class
        self.state = np.zeros((self.length, 1 if self.symbol else -(-state_channels // 8)), np.uint8)
        self.started = False
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
        """-> problem (R, C_in, row_length), state (R, C_s, row_length), owned (R, 1, row_length)
        float32 for the rows of `spans`, each padded on the right with empty cells."""
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
        symbols = np.where(valid, self.cells[index], np.int8(-1))
        problem = one_hot_cells(symbols, self.c_in)
        if self.started:
            if self.symbol:
                classes = self.state[index][:, None, :, 0]  # (R, 1, W)
                state = (classes == np.arange(self.c_s)[:, None]).astype(np.float32)  # (R, C_s, W)
            else:
                bits = np.unpackbits(self.state[index], axis=-1, count=self.c_s, bitorder="little")  # (R, W, C_s)
                state = bits.transpose(0, 2, 1).astype(np.float32) * 2 - 1
            state *= problem[:, :1]  # empty cells hold no state
        else:
            state = np.zeros((len(spans), self.c_s, row_length), np.float32)
        owned = ((columns >= halo) & (columns < widths[:, None] - halo)).astype(np.float32)[:, None, :]
        return problem, state, owned

    def owned_results(self, spans: list[tuple[int, int]], halo: int, state: np.ndarray, hot: np.ndarray):
        """The rows' results on the cells they own: -> [(span, packed state (n, bytes), hot tiles)]."""
        out = []
        for row, (a, b) in enumerate(spans):
            owned = slice(halo, halo + b - a)
            if self.symbol:
                packed = state[row, :, owned].argmax(0).astype(np.uint8)[:, None]
            else:
                packed = np.packbits(state[row, :, owned] > 0, axis=0, bitorder="little").T
            cells_hot = hot[row, owned]
            pad = -len(cells_hot) % self.tile
            tiles_hot = np.concatenate([cells_hot, np.zeros(pad, bool)]).reshape(-1, self.tile).any(axis=1)
            out.append(((a, b), np.ascontiguousarray(packed), tiles_hot))
        return out

    def apply(self, results) -> bool:
        """Store a call's owned results and choose the next call's tiles. -> whether any tile is hot."""
        hot = np.zeros(self.tiles, bool)
        for (a, b), packed, tiles_hot in results:
            self.state[a:b] = packed
            hot[a // self.tile: a // self.tile + len(tiles_hot)] = tiles_hot
        self.started = True
        active = hot.copy()
        active[1:] |= hot[:-1]
        active[:-1] |= hot[1:]
        if self.ring and self.tiles > 1:
            active[0] |= hot[-1]
            active[-1] |= hot[0]
        self.active = active
        return bool(hot.any())

    def readout_rows(self, spans: list[tuple[int, int]], row_length: int):
        """-> problem, state (R, C, row_length) float32 of `spans` without halos, for the readout."""
        problem, state, _ = self.gather(spans, 0, row_length)
        return problem, state

    def all_spans(self, max_cells: int | None = None) -> list[tuple[int, int]]:
        step = self.tile * (self.run_tiles if max_cells is None else max(1, min(self.run_tiles, max_cells // self.tile)))
        return [(a, min(a + step, self.length)) for a in range(0, self.length, step)]
