"""Array helpers for the tasks' bulk codecs (parse_many / codes / decode_classes): many lines held
as one uint8 buffer, fields located by offsets into it, cells gathered and answers written with
numpy, so that no Python object is made per problem.

Rows of many cells (a long tape) are copied row by row instead: the vectorized gathers build
int64 index arrays of the output's size, which would be eight times its memory.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import InputError

LONG_ROW = 2048  # cells from which a row is copied with slices, not gathered through an index array


def joined_lines(lines: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """All lines joined by b"\\n" as one (N,) uint8 buffer, with each line's (n,) int64 start and
    end (exclusive) in it. None when a line holds a non-ASCII character or a "\\n", or no line
    holds anything: such a line is invalid for every task with a fast path, and its task's own
    parse names what is wrong."""
    text = "\n".join(lines)
    if not text or not text.isascii():
        return None
    data = np.frombuffer(text.encode("ascii"), np.uint8)
    newlines = np.flatnonzero(data == 10)
    if len(newlines) != len(lines) - 1:
        return None
    ends = np.append(newlines, len(data))
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = newlines + 1
    return data, starts, ends


def line_of(ends: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The line (0-based) that holds each byte position, for positions inside lines (not on a
    separating newline)."""
    return np.searchsorted(ends, positions, side="right")


def non_digits(data: np.ndarray) -> np.ndarray:
    """Positions of the bytes that are not ASCII digits (separators included), ascending."""
    return np.flatnonzero(data - np.uint8(48) > 9)  # uint8 wraps below '0': one test for both sides


def vouch(task, lines: Sequence[str], suspect: np.ndarray) -> dict[int, object]:
    """Parse the lines a vectorized check could not vouch for with the task's own parse, in
    order: the first bad one raises InputError(reason, line=k) with k 1-based, which is the
    batch's first bad line since every other line was checked valid. -> {index: Parsed} of the
    suspects that are valid after all (e.g. spaces around '+')."""
    valid = {}
    for k in np.flatnonzero(suspect).tolist():
        try:
            valid[k] = task.parse(lines[k])
        except InputError as exc:
            raise InputError(exc.reason, line=k + 1) from None
    return valid


def place_digits(data: np.ndarray, first: np.ndarray, count: np.ndarray, at: np.ndarray, width: int) -> np.ndarray:
    """(m, width) uint8: row i holds the digit values data[first[i] + k] - 48 at cells at[i] + k
    for k < count[i], and 0 on every other cell. first, count, at: (m,) int64; the run must fit."""
    m = len(first)
    out = np.zeros((m, width), np.uint8)
    if m == 0 or width == 0:
        return out
    if width >= LONG_ROW:
        for i, (f, c, a) in enumerate(zip(first.tolist(), count.tolist(), at.tolist())):
            out[i, a: a + c] = data[f: f + c] - np.uint8(48)
        return out
    if (count == count[0]).all() and (at == at[0]).all():  # one layout for all rows: a plain gather
        c, a = int(count[0]), int(at[0])
        out[:, a: a + c] = data[first[:, None] + np.arange(c)] - np.uint8(48)
        return out
    rel = np.arange(width) - at[:, None]  # (m, width): the digit each cell holds, if any
    inside = (rel >= 0) & (rel < count[:, None])
    values = data.take(np.where(inside, rel + first[:, None], 0)) - np.uint8(48)
    np.multiply(values, inside, out=out)
    return out


def real_cells(lengths: np.ndarray, width: int) -> np.ndarray:
    """(m, width) bool: True on the first lengths[i] cells of row i."""
    return np.arange(width) < lengths[:, None]


def right_aligned_numbers(data: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int) -> np.ndarray:
    """(n,) int64: the decimal number written at data[starts[i]:ends[i]] (0 if empty), for fields
    of at most `width` digits (width <= 18, so the value fits int64)."""
    if len(starts) == 0:
        return np.zeros(0, np.int64)
    pos = ends[:, None] - width + np.arange(width)
    values = data.take(pos, mode="clip").astype(np.int64) - 48
    values[pos < starts[:, None]] = 0
    return values @ (10 ** np.arange(width - 1, -1, -1, dtype=np.int64))


def row_texts(chars: np.ndarray, first: np.ndarray, stop: np.ndarray) -> list[str]:
    """chars: (m, width) uint8 ASCII bytes, no b"\\n" among them -> the text chars[i, first[i]:stop[i]]
    of each row, made as one bytes buffer and one split (no Python object per row but its str)."""
    m, width = chars.shape
    if m == 0:
        return []
    if width >= LONG_ROW:
        return [chars[i, f:s].tobytes().decode() for i, (f, s) in enumerate(zip(first.tolist(), stop.tolist()))]
    framed = np.empty((m, width + 1), np.uint8)  # each row, then a b"\n" column that ends its text
    framed[:, :width] = chars
    framed[:, width] = 10
    cols = np.arange(width + 1)
    keep = (cols >= first[:, None]) & (cols < stop[:, None])
    keep[:, width] = True
    return framed[keep].tobytes().decode().split("\n")[:m]


def tape_codes(buffer: np.ndarray, fields: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
    """(m, width) uint8 codes of digit tapes at buffer[fields[i, 0]:fields[i, 1]] (lengths[i]
    cells), from cell 0: 1 + the digit on a real cell, 0 after it."""
    cells = place_digits(buffer, fields[:, 0], lengths, np.zeros_like(lengths), width)
    cells += real_cells(lengths, width)
    return cells
