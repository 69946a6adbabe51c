"""Where a cell's neighbours are in the channels-last ("cl") layout: a row is a list of cells and a
table (L, taps) says, for each cell, the index of each neighbour in the row (runtime/graph/cl.py
gathers them). Any topology is a table: a tape, a ring (its ends are neighbours), a grid (H x W
cells, row-major), a tile window.

A neighbour beyond a tape's or a grid's edge is the row's last cell, which must be empty: what
lies beyond a problem is an empty cell, exactly as the exported step's zero padding. Rows of a
line task always end in one (runtime/loop.py pads them), a grid's rows in its padded last row.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=256)
def neighbour_table(shape: tuple[int, ...], wrap: bool) -> np.ndarray:
    """(cells, 3 ** rank) int64 for a row of `shape` cells ((L,) or (H, W)); taps in row-major
    offset order ((-1, 0, +1); on a grid (dy, dx)), the order of Rule.tap_weights. Read-only."""
    cells = math.prod(shape)
    dims = np.array(shape)[:, None]
    offsets = [()]
    for _ in shape:
        offsets = [o + (d,) for o in offsets for d in (-1, 0, 1)]
    position = np.indices(shape).reshape(len(shape), -1)  # (rank, cells)
    table = np.empty((cells, len(offsets)), np.int64)
    for t, offset in enumerate(offsets):
        moved = position + np.array(offset)[:, None]
        if wrap:
            table[:, t] = np.ravel_multi_index(moved % dims, shape)
        else:
            inside = ((moved >= 0) & (moved < dims)).all(0)
            table[:, t] = np.where(inside, np.ravel_multi_index(np.where(inside, moved, 0), shape), cells - 1)
    table.flags.writeable = False
    return table
