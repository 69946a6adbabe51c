"""What every task shares: the parsed problem, the compact cell code, the one-hot expansion, the
text helpers of the codecs, and the Task base class that names every hook the rest of sead uses.

A problem becomes a tape of cells. Its compact form is one small int per cell (`encode_cells`,
-1 for an empty cell), which is how a long tape rests between calls; the engines read the
one-hot float32 form made from it here (`one_hot_cells`): channel 0 is the *mask*, 1 on a real
cell and 0 on padding, then the one-hot symbol. The model multiplies its state by the mask, so a
padded cell is exactly the world beyond the tape: padding on the right changes neither the answer
nor the number of steps. A ring (boundary "ring") is never padded.

In bulk, many problems are one `Problems` (arrays, no object per problem): `parse_many` makes
it, `codes` gives its cells as uint8 codes (0: an empty cell, 1 + s: symbol s) and
`decode_classes` turns readout classes into answers. Their defaults here go through parse,
encode_cells and decode_many; a task may override them with numpy fast paths that must agree
exactly (tests/test_bulk_codecs.py).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np

from ..errors import InputError
from .bulk import check_fit, tape_codes

ASCII_DIGITS = frozenset("0123456789")
BITS = frozenset("01")
MAX_STEPS = 10**12  # the most steps (or rule110 generations) one problem may ask for
_DELETE = {ASCII_DIGITS: str.maketrans("", "", "0123456789"), BITS: str.maketrans("", "", "01")}


class Parsed(NamedTuple):
    """A validated problem (a tuple: cheap to make by the million). `a`/`b` are a task's operands
    (addition's numbers, rule110's tape); `generations` is for tasks that run a given number of
    steps."""

    text: str
    length: int  # cells on the tape (on a grid: all its cells)
    generations: int | None = None
    a: str = ""
    b: str = ""
    shape: tuple[int, ...] | None = None  # a grid's (height, width); None on a tape: (length,)


class Task:
    """A task: everything sead asks about one, in one object. Subclasses set the class attributes
    and implement the hooks that raise NotImplementedError; the rest is shared.

    size: a problem's natural size (operand digits, bits, ring cells); `size_for(cells)` is the
    size whose tape has `cells` cells. Register a new task with `sead.runtime.tasks.register(MyTask())`.
    """

    name: str
    rank: int = 1  # 1: a tape of cells; 2: a grid
    input_channels: int  # mask + the one-hot cell code
    classes: int  # readout classes per cell
    convergence: str  # "fixed_point": stop when a step changes nothing; "generations": run N steps
    boundary: str  # "zeros": a line, padded with empty cells; "ring": wraps around, never padded
    families: tuple[str, ...] = ("random",)  # what `sead eval` measures, per length

    # -- the shape of a problem -------------------------------------------------------------------
    def shape(self, p: Parsed) -> tuple[int, ...]:
        """The cells a problem occupies: (L,) on a tape, (H, W) on a grid."""
        return p.shape or (p.length,)

    def diameter(self, p: Parsed) -> int:
        """How many steps information needs to cross the problem (radius 1); a function of its
        shape alone (the runtime computes step caps once per shape)."""
        return sum(self.shape(p))

    def step_cap(self, p: Parsed, radius: int = 1) -> int:
        """The default step cap of a problem (see default_step_cap)."""
        return default_step_cap(self.diameter(p), radius)

    def due_step(self, p: Parsed) -> int:
        """Training: the step from which the answer must be right (crossing, plus one)."""
        return self.diameter(p) + 1

    def due_steps(self, p: Parsed) -> np.ndarray:
        """Training: shape(p) int64, the step from which each cell's readout must be right; by
        default every cell's is the problem's due_step."""
        return np.full(self.shape(p), self.due_step(p), np.int64)

    # -- the codec -------------------------------------------------------------------------------
    def parse(self, line: str) -> Parsed:
        """One line of text -> Parsed, or InputError saying what is wrong."""
        raise NotImplementedError

    def encode_cells(self, problems: list[Parsed], shape) -> np.ndarray:
        """(B, *shape) int8: each problem's cell symbols from the first cell, -1 on the empty cells
        that pad it to `shape` (an int L on a tape, (H, W) on a grid)."""
        raise NotImplementedError

    def decode_many(self, symbols: np.ndarray, problems: list[Parsed]) -> list[str]:
        """(B, L) readout classes -> each problem's answer text."""
        raise NotImplementedError

    def encode_many(self, problems: list[Parsed], shape) -> np.ndarray:
        """(B, C_in, *shape) float32: the mask channel, then the one-hot cell symbols. shape: a
        row's cells, L or (L,) on a tape, (H, W) on a grid."""
        if self.rank == 1 and not isinstance(shape, int):
            (shape,) = shape
        return one_hot_cells(self.encode_cells(problems, shape), self.input_channels)

    def encode(self, p: Parsed) -> np.ndarray:
        shape = self.shape(p)
        return self.encode_many([p], shape[0] if self.rank == 1 else shape)[0]

    def decode(self, symbols: np.ndarray, p: Parsed) -> str:
        return self.decode_many(symbols[None], [p])[0]

    # -- the bulk codec: many problems as arrays ------------------------------------------------
    def parse_many(self, lines: Sequence[str]) -> Problems:
        """Many lines -> Problems, or InputError(reason, line=k) for the first bad line (k 1-based)
        with exactly the reason parse(lines[k - 1]) gives."""
        lines = list(lines)
        parsed = []
        for number, line in enumerate(lines, 1):
            try:
                parsed.append(self.parse(line))
            except InputError as exc:
                raise InputError(exc.reason, line=number) from None
        return Problems.from_parsed(self, parsed, lines)

    def codes(self, problems: Problems, index: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """(len(index), *shape) uint8: each selected problem's cell codes from its first cell, 0 on
        an empty (padding) cell, 1 + s on a cell of symbol s (encode_cells + 1). shape: a row's
        cells, (L,) on a tape, (H, W) on a grid; every selected problem fits in it."""
        index = np.asarray(index, np.int64)
        check_fit(problems.shapes[index], tuple(shape))
        chosen = [problems.parsed(i) for i in index.tolist()]
        cells = self.encode_cells(chosen, shape[0] if self.rank == 1 else tuple(shape))
        return (cells.astype(np.int16) + 1).astype(np.uint8)

    def decode_classes(self, classes: np.ndarray, problems: Problems, index: np.ndarray) -> list[str]:
        """classes: (len(index), *shape) uint8, the readout class of each cell (the argmax) -> each
        selected problem's answer text, as decode_many gives it."""
        chosen = [problems.parsed(i) for i in np.asarray(index, np.int64).tolist()]
        return self.decode_many(np.asarray(classes), chosen)

    # -- the oracle and training ------------------------------------------------------------------
    def answer(self, p: Parsed) -> str:
        """The exact answer, computed without any model."""
        raise NotImplementedError

    def targets(self, p: Parsed) -> np.ndarray:
        """shape(p) int64: the wanted readout class per cell, -1 where nothing is read."""
        raise NotImplementedError

    eval_sizes: tuple[int, ...] = (16, 100, 1000)  # what `sead eval` and `sead train` measure by default

    size_words = "cells"  # what `size` counts

    def size(self, p: Parsed) -> int:
        """A problem's size, as sizes are counted in training (max_len) and evaluation (eval_sizes)."""
        return p.length

    def size_for(self, cells: int) -> int:
        """The size of a problem whose tape has `cells` cells (at least 1)."""
        return max(1, cells)

    def cells(self, size: int) -> int:
        """About how many cells a problem of `size` occupies (for sizing evaluation batches)."""
        return size

    def random_line(self, rng: np.random.Generator, size: int, generations: int | None = None) -> str:
        """A random problem of `size`; `generations`: how many steps a generations task runs."""
        raise NotImplementedError

    def training_line(self, rng: np.random.Generator, size: int, roll: float) -> str:
        """A training problem of `size`; `roll` (uniform in [0, 1)) picks among hard families."""
        return self.random_line(rng, size)

    def family_lines(self, family: str, size: int, count: int, rng: np.random.Generator) -> list[str]:
        """Up to `count` problems of `size` from one of `families`, for `sead eval`."""
        if family != "random":
            raise ValueError(f"unknown family {family!r} for {self.name}")
        return [self.random_line(rng, size) for _ in range(count)]

    def canonical_lines(self) -> list[str]:
        """A few problems any working model answers: a model's self-test at load."""
        raise NotImplementedError

    def generation_targets(self, p: Parsed, horizon: int) -> np.ndarray:
        """Training, tasks that run a given number of steps: (horizon + 1, *shape(p)) int64, the
        wanted readout class per cell after 0, 1, ..., horizon generations (p.generations aside)."""
        raise NotImplementedError


class Problems:
    """Many parsed problems of one task as arrays: what the runtime batches, encodes and decodes.

    Per-problem arrays, all (n,) int64 but `shapes` (n, task.rank): `lengths` (cells, as
    Parsed.length), `shapes` (task.shape), `generations` (for a "generations" task, else None),
    `sizes` (task.size), `diameters` (task.diameter). Two layouts stand behind them: the generic
    one keeps one Parsed per problem (`from_parsed`, the default parse_many); a task's fast
    parse_many keeps instead all lines as one uint8 buffer (`buffer`) and, per problem, the byte
    offsets of its fields in it (`fields`, (n, k) int64, laid out by that task), so that its codes
    and decode_classes need no Python object per problem.
    """

    def __init__(self, task: Task, lines: list[str], lengths: np.ndarray, shapes: np.ndarray,
                 generations: np.ndarray | None, sizes: np.ndarray, diameters: np.ndarray, *,
                 parsed: list[Parsed] | None = None, buffer: np.ndarray | None = None,
                 fields: np.ndarray | None = None):
        self.task = task
        self.lines = lines
        self.lengths = lengths
        self.shapes = shapes
        self.generations = generations
        self.sizes = sizes
        self.diameters = diameters
        self._parsed = parsed
        self.buffer = buffer  # (N,) uint8, the lines joined; shared by every take()
        self.fields = fields

    @classmethod
    def from_parsed(cls, task: Task, parsed: list[Parsed], lines: list[str] | None = None) -> Problems:
        """The generic layout, for any task: one Parsed per problem. lines: the texts they were
        parsed from (default: each Parsed's text)."""
        parsed = list(parsed)
        n = len(parsed)
        generations = None
        if task.convergence == "generations":
            generations = np.fromiter((p.generations for p in parsed), np.int64, n)
        lines = [p.text for p in parsed] if lines is None else list(lines)
        return cls(task, lines, np.fromiter((p.length for p in parsed), np.int64, n),
                   np.array([task.shape(p) for p in parsed], np.int64).reshape(n, task.rank), generations,
                   np.fromiter((task.size(p) for p in parsed), np.int64, n),
                   np.fromiter((task.diameter(p) for p in parsed), np.int64, n), parsed=parsed)

    @classmethod
    def from_fields(cls, task: Task, lines: list[str], buffer: np.ndarray, fields: np.ndarray,
                    lengths: np.ndarray, generations: np.ndarray | None = None) -> Problems:
        """A fast layout, for a tape task whose size and diameter are its cells (the defaults)."""
        return cls(task, lines, lengths, lengths[:, None], generations, lengths, lengths,
                   buffer=buffer, fields=fields)

    def __len__(self) -> int:
        return len(self.lines)

    def parsed(self, i: int) -> Parsed:
        """Problem i as a Parsed: the slow path (a long tape's tiles, error reports)."""
        if self._parsed is not None:
            return self._parsed[i]
        return self.task.parse(self.lines[i])

    def take(self, index: np.ndarray) -> Problems:
        """The problems at `index` ((m,) int), in its order."""
        index = np.asarray(index, np.int64).reshape(-1)
        if len(index) and index[-1] - index[0] == len(index) - 1 and (np.diff(index) == 1).all():
            return self.slice(int(index[0]), int(index[-1]) + 1)
        positions = index.tolist()
        return Problems(self.task, [self.lines[i] for i in positions], self.lengths[index], self.shapes[index],
                        None if self.generations is None else self.generations[index],
                        self.sizes[index], self.diameters[index],
                        parsed=None if self._parsed is None else [self._parsed[i] for i in positions],
                        buffer=self.buffer, fields=None if self.fields is None else self.fields[index])

    def slice(self, start: int, stop: int) -> Problems:
        """Problems start..stop-1: views of the arrays, a slice of the lines (no per-problem work)."""
        part = np.s_[start:stop]
        return Problems(self.task, self.lines[part], self.lengths[part], self.shapes[part],
                        None if self.generations is None else self.generations[part],
                        self.sizes[part], self.diameters[part],
                        parsed=None if self._parsed is None else self._parsed[part],
                        buffer=self.buffer, fields=None if self.fields is None else self.fields[part])


class BitTape(Task):
    """A task whose problem is a tape of bits (parity, rule110): symbols 0 and 1, read out as 0 or
    1; its bulk parse records each tape's [start, end) in the buffer (Problems.fields)."""

    input_channels = 3  # mask, one-hot bit (2)
    classes = 2

    def codes(self, problems: Problems, index: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        if problems.fields is None:
            return super().codes(problems, index, shape)
        index = np.asarray(index, np.int64)
        return tape_codes(problems.buffer, problems.fields[index], problems.lengths[index], *shape)


def check_symbols(text: str, what: str, allowed: frozenset = ASCII_DIGITS) -> None:
    if not text:
        raise InputError(f"{what} is empty")
    if not text.translate(_DELETE[allowed]):  # fast path, at C speed: nothing but allowed symbols
        return
    for pos, ch in enumerate(text):
        if ch not in allowed:
            kind = "ASCII digits" if allowed is ASCII_DIGITS else "'0' and '1'"
            raise InputError(f"{what} has {ch!r} at position {pos + 1}; only {kind} are allowed")


def operands(line: str, op: str) -> tuple[str, str]:
    """`A op B` -> (A, B): two decimal operands, spaces allowed around `op`, or InputError."""
    a, _, b = line.partition(op)
    if a and b and not (a + b).translate(_DELETE[ASCII_DIGITS]):  # the common case, at C speed
        return a, b
    form = f"'A{op}B'"
    not_blank(line, form)
    if line.count(op) != 1:
        raise InputError(f"expected one {op!r} in {form}, found {line.count(op)}")
    left, right = line.split(op)
    a, b = left.strip(" "), right.strip(" ")
    check_symbols(a, "the first operand")
    check_symbols(b, "the second operand")
    return a, b


def random_operands(rng: np.random.Generator, size: int) -> tuple[str, str]:
    """Two random decimal operands: one of `size` digits; the other as long 70% of the time,
    else 1 to `size` digits; either side first."""
    la = size
    lb = size if rng.random() < 0.7 else int(rng.integers(1, size + 1))
    if rng.random() < 0.5:
        la, lb = lb, la
    return random_digits(rng, la), random_digits(rng, lb)


def not_blank(line: str, expected: str) -> None:
    if not line.strip():
        raise InputError(f"blank line; expected {expected}")
    if "\r" in line:  # lines.iter_lines splits on LF and drops one CR before it: any CR left is bare
        raise InputError("line endings are bare CR (old Mac); convert to LF")


def digits(text: str) -> np.ndarray:
    return (np.frombuffer(text.encode(), np.uint8) - 48).astype(np.int64)


def symbol_texts(symbols: np.ndarray, problems: list[Parsed]) -> list[str]:
    """Each problem's cells as a string of digit symbols (one bytes conversion for the batch)."""
    length = symbols.shape[1]
    flat = (np.asarray(symbols, np.uint8) + 48).tobytes().decode()
    return [flat[i * length: i * length + p.length] for i, p in enumerate(problems)]


def digit_rows(texts: list[str], length: int) -> np.ndarray:
    """(B, length) int8 digits of each text from cell 0, -1 on the empty cells after it."""
    joined = "".join(t.ljust(length, "/") for t in texts).encode()  # '/' is '0' - 1
    return (np.frombuffer(joined, np.int8).reshape(len(texts), length) - 48).astype(np.int8, copy=False)


def default_step_cap(diameter: int, radius: int = 1) -> int:
    """Information crosses a problem of this diameter (a tape's length; a grid's height + width)
    in diameter / radius steps; allow twice that, plus slack."""
    return 2 * math.ceil(diameter / radius) + 16


def one_hot_cells(symbols: np.ndarray, channels: int) -> np.ndarray:
    """(B, *S) int cell symbols, -1 for an empty cell -> (B, channels, *S) float32: channel 0 is
    the mask (1 on a real cell), then the one-hot symbol. The one expansion of every task's cells.

    The array is stored channel-major, (channels, B, *S) in memory, viewed as (B, channels, *S):
    rows laid end to end per channel are the CPU engine's packed layout, which then needs no copy
    (np.ascontiguousarray gives the usual layout where an engine wants it)."""
    code = np.asarray(symbols, np.int16) + 1  # 0: an empty cell, s + 1: symbol s
    index = np.arange(channels, dtype=np.int16).reshape(-1, *[1] * code.ndim)
    cells = (code[None] == index).astype(np.float32)  # (channels, B, *S)
    cells[0] = code > 0
    return cells.swapaxes(0, 1)


def random_digits(rng: np.random.Generator, n: int) -> str:
    return (rng.integers(0, 10, n).astype(np.uint8) + 48).tobytes().decode()


def random_bits(rng: np.random.Generator, n: int) -> str:
    return "".join("01"[v] for v in rng.integers(0, 2, n))
