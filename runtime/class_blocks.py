"""Class-coded blocks: m steps of a lookup rule in one lookup, for tile windows. numpy only.

The lookup layout's block of m steps reads every digit within m cells of a cell: n^(2m+1)
entries, too many past one step for addition's 76 digits. But a block's result depends on most of
the cells it reads only through a few classes of their digit (addition's 6-step block: 2, 20, 4,
3, 3, 3, 4 and 2 classes at the 8 positions it reads, 34,560 entries). A state that holds, per
cell, its digit and each class map a block reads, as channels, indexes the block with one
convolution (each position reads its channel's class); the table gives every channel of the
centre after the block, and whether the block's last step changed it. Three operators and an
Expand for m steps, on C + 1 channels (graph.classes_advance).

`position_classes` finds the classes exactly. A block of j steps is the step on three blocks of
j - 1, and the step tells a left (right) neighbour apart only by a few classes, so a position's
classes at j refine no further than the joint classes, at j - 1, of the left block's left class,
the centre block's digit and the right block's right class that read it. Each j runs the step on
one digit of every such combination and merges what the result cannot tell apart.

A block's table keys on the centre's digit and on whether its last step changed it: the hot cells
of a tile window (mode "hot"). When a cell last changed inside a block is not a function of these
classes (keying on it made addition's table 18x larger), so counts of changing steps (modes count
and owned) run the lookup layout.
"""
from __future__ import annotations

import numpy as np

CLASS_TABLE_ENTRIES = 1 << 18  # a block table's entries at most (parity's 9-step one: 137,781)
MAX_CLASS_STEPS = 12            # (addition stops at 7 steps, parity at 9: their next tables pass the bound)


def class_ids(rows: np.ndarray) -> np.ndarray:
    """(k, w) int rows -> (k,) ids of equal rows, numbered by first appearance (so row 0 is 0).
    Rows are told apart by a random 64-bit hash, then checked equal to their class's first row
    (exact: a collision falls back to a row-by-row comparison)."""
    rows = np.ascontiguousarray(rows, np.int64).reshape(len(rows), -1)
    weights = np.random.default_rng(0).integers(1, 1 << 62, rows.shape[1], dtype=np.int64)
    _, first, inverse = np.unique(rows @ weights, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    if not np.array_equal(rows, rows[first[inverse]]):
        _, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
    return np.argsort(np.argsort(first))[inverse]


def run_block(step: np.ndarray, cells: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """step (n, n, n), cells (P, 2m + 1) digits -> (the centre after m steps, whether step m
    changed it)."""
    for _ in range(m):
        before = cells[:, cells.shape[1] // 2]
        cells = step[cells[:, :-2], cells[:, 1:-1], cells[:, 2:]]
    return cells[:, 0], cells[:, 0] != before


def representatives(maps: list[np.ndarray]) -> np.ndarray:
    """One digit of each class at each position, every combination, the last position fastest:
    (prod classes, positions)."""
    reps = [np.array([np.flatnonzero(c == k)[0] for k in range(c.max() + 1)], np.int32) for c in maps]
    return np.stack([g.reshape(-1) for g in np.meshgrid(*reps, indexing="ij")], 1)


def position_classes(step: np.ndarray, max_steps: int, max_entries: int) -> list[list[np.ndarray]]:
    """For blocks of 1, 2, ... steps: per position (2j + 1 of them, left to right) the classes of
    digit (n,) that no window tells apart in the block's result. Stops before the first j whose
    table would pass max_entries, or at max_steps."""
    n = step.shape[0]
    step = step.astype(np.uint8 if n <= 256 else np.int32)
    left = class_ids(step.reshape(n, n * n))                    # a left neighbour's classes
    right = class_ids(step.transpose(2, 0, 1).reshape(n, n * n))  # a right neighbour's
    digit, of_left, of_right = [np.arange(n)], [left], [right]    # per position: classes of F, left(F), right(F)
    levels = []
    for j in range(1, max_steps + 1):
        candidates = []
        sources = ((of_left, -1), (digit, 0), (of_right, 1))  # the j - 1 blocks' maps, and where each sits
        for p in range(-j, j + 1):
            parts = [maps[p - c + j - 1] for maps, c in sources if abs(p - c) <= j - 1]
            candidates.append(class_ids(np.stack(parts, 1)))
        counts = [int(c.max()) + 1 for c in candidates]
        if np.prod(counts, dtype=np.float64) > 8 * max_entries:  # the search itself would be too large
            break
        centre, hot = run_block(step, representatives(candidates), j)

        def classes(values: np.ndarray) -> list[np.ndarray]:
            return [class_ids(np.moveaxis(values.reshape(counts), i, 0).reshape(counts[i], -1))[candidates[i]]
                    for i in range(2 * j + 1)]
        result = classes(centre.astype(np.int64) * 2 + hot)
        if np.prod([int(c.max()) + 1 for c in result], dtype=np.float64) > max_entries:
            break
        levels.append(result)
        digit, of_left, of_right = classes(centre), classes(left[centre]), classes(right[centre])
    return levels


def _refines(fine: np.ndarray, coarse: np.ndarray) -> bool:
    """Whether `coarse` is a function of `fine` (both (n,) class maps)."""
    return len(np.unique(np.stack([fine, coarse], 1), axis=0)) == int(fine.max()) + 1


class ClassTables:
    """The class-coded blocks of one lookup rule (graph.LookupTables), of every length 1..m.

    channels: C class maps (n,) of digit, channel 0 the digit itself; the state holds them and,
    last, whether the latest step changed the cell (channel C). For a block of j steps:
    weights[j] (1, C + 1, w) float32, the index convolution (pads[j] = cells read left, right),
    and inputs[f"class_table_{j}"] (1, C + 1, entries) float32, every channel of the centre
    after the block and whether its last step changed it; classes[j]: the classes of each cell
    it reads, left to right (their product is its entries). m = block_steps: the longest block
    whose table has at most max_entries entries; K steps take `plan`'s blocks."""

    def __init__(self, tables, max_entries: int = CLASS_TABLE_ENTRIES, max_steps: int = MAX_CLASS_STEPS):
        n = self.n = tables.n
        step = tables.step.reshape(n, n, n)
        if step[:, 0, :].any():
            raise ValueError("class-coded blocks need a rule whose empty cells stay empty")
        levels = position_classes(step, max_steps, max_entries)
        if not levels:
            raise ValueError(f"no class-coded block of this rule's {n} digits fits {max_entries:,} entries")
        self.block_steps = len(levels)
        self.channels = [np.arange(n)]
        for c in levels[-1]:  # the longest block's maps; shorter blocks read these or finer ones
            if c.max() > 0 and not any(np.array_equal(c, known) for known in self.channels):
                self.channels.append(c)
        if any(int(c[0]) for c in self.channels):  # a convolution's zero padding reads as empty cells
            raise ValueError("a class map gives the empty cell a class other than 0")
        width = self.width
        self.digit_channels = np.zeros((1, width, n), np.float32)  # a digit -> its state (prepare)
        self.digit_channels[0, :-1] = self.channels
        self.weights, self.pads, self.inputs, self.classes = {}, {}, {}, {}
        for j, maps in enumerate(levels, 1):
            reads = []  # per position: the coarsest channel that refines its classes (None: unread)
            for c in maps:
                fits = [i for i, ch in enumerate(self.channels) if c.max() > 0 and _refines(ch, c)]
                reads.append(min(fits, key=lambda i: self.channels[i].max()) if fits else None)
            counts = [1 if i is None else int(self.channels[i].max()) + 1 for i in reads]
            strides = np.cumprod([1] + counts[::-1])[:-1][::-1]
            weight = np.zeros((1, width, 2 * j + 1), np.float32)
            for position, channel in enumerate(reads):
                if channel is not None:
                    weight[0, channel, position] = strides[position]
            used = np.flatnonzero(weight.any(axis=(0, 1)))
            first, last = (int(used[0]), int(used[-1])) if len(used) else (j, j)
            self.weights[j] = weight[:, :, first: last + 1]
            self.pads[j] = (j - first, last - j)
            grid = representatives([np.zeros(n, np.int64) if i is None else self.channels[i] for i in reads])
            centre, hot = run_block(step, grid, j)
            table = np.empty((1, width, len(grid)), np.float32)
            table[0, :-1] = np.stack([c[centre] for c in self.channels])
            table[0, -1] = hot
            table.flags.writeable = False
            self.inputs[f"class_table_{j}"] = table
            self.classes[j] = [c for c in counts if c > 1]  # the classes of each cell it reads, left to right

    def plan(self, k: int) -> list[int]:
        """The steps of each block that K steps take, in order (graph.block_plan)."""
        from .graph import block_plan  # graph imports this module only to name its type
        return block_plan(k, self.block_steps)

    @property
    def width(self) -> int:
        """Channels of the state: the class maps and the hot channel."""
        return len(self.channels) + 1
