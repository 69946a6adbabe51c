"""Array helpers for the tasks' bulk codecs (parse_many / codes / decode_classes): many lines held
as one uint8 buffer, fields located by offsets into it, cells gathered and answers written with
numpy, so that no Python object is made per problem and time is linear in bytes and cells.

Per-cell work runs on uint8 and bool arrays, and cell-index tests on uint16 (wider only past
65,535 cells): an int64 temporary per cell would cost eight times the output's memory and most of
the time.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import InputError, InternalError


class Scan(NamedTuple):
    """Many lines as one buffer, and where its unexpected bytes lie."""

    data: np.ndarray  # (N,) uint8: the lines joined by b"\n"
    starts: np.ndarray  # (n,) int64: each line's first byte in data
    ends: np.ndarray  # (n,) int64: each line's end (exclusive; its b"\n" if it has one)
    odd: np.ndarray  # (k,) int64: positions of the bytes outside the expected range, ascending
    odd_line: np.ndarray  # (k,) int64: the line (0-based) of each


def scan(task, lines: Sequence[str], low: str, high: str) -> Scan | None:
    """Join the lines into one buffer and find the bytes outside low..high (the separators aside).
    None when no line holds anything (the generic path is as fast). A line with a non-ASCII
    character or a "\n" is invalid for every task with a fast path: the lines before it are parsed
    in bulk, then the task's own parse names what is wrong with it (InputError)."""
    text = "\n".join(lines)
    if not text:
        return None
    if text.isascii():
        data = np.frombuffer(text.encode("ascii"), np.uint8)
        marks = np.flatnonzero((data < ord(low)) | (data > ord(high)))  # the b"\n" separators included
        is_newline = data[marks] == 10
        newlines = marks[is_newline]
        if len(newlines) == len(lines) - 1:
            odd = ~is_newline
            odd_line = np.cumsum(is_newline)[odd]  # the newlines before a byte: its line, with no search
            starts = np.zeros(len(lines), np.int64)
            starts[1:] = newlines + 1
            return Scan(data, starts, np.append(newlines, len(data)), marks[odd], odd_line)
    unscannable = next(k for k, line in enumerate(lines) if not line.isascii() or "\n" in line)
    task.parse_many(lines[:unscannable])  # an earlier bad line comes first
    vouch(task, lines, np.array([unscannable]))
    raise InternalError(f"{task.name}: line {unscannable + 1} ({lines[unscannable]!r}) parsed, but the bulk "
                        "parser holds such a line invalid")


def vouch(task, lines: Sequence[str], suspects: np.ndarray) -> dict[int, object]:
    """Parse the lines a vectorized check could not vouch for (suspects: ascending (k,) indices)
    with the task's own parse, in order: the first bad one raises InputError(reason, line=k) with
    k 1-based, which is the batch's first bad line since every line before it was checked valid.
    -> {index: Parsed} of the suspects that are valid after all (e.g. spaces around '+')."""
    valid = {}
    for k in suspects.tolist():
        try:
            valid[k] = task.parse(lines[k])
        except InputError as exc:
            raise InputError(exc.reason, line=k + 1) from None
    return valid


def check_fit(shapes: np.ndarray, shape: tuple[int, ...]) -> None:
    """shapes: (m, rank) int64, the selected problems' cell shapes. The caller's rows of `shape`
    must hold every one: a short row would drop cells silently."""
    if len(shapes) and (shapes.max(0) > np.asarray(shape)).any():
        widest = tuple(shapes.max(0).tolist())
        raise InternalError(f"a problem of shape {widest} does not fit rows of shape {tuple(shape)}")


def byte_rows(data: np.ndarray, start: np.ndarray, width: int) -> np.ndarray:
    """(m, width) uint8: row i is data[start[i]: start[i] + width], 0 where that runs off the buffer."""
    lo, hi = int(start.min()), int(start.max()) + width
    if lo < 0 or hi > len(data):  # rows at the buffer's ends: window a zero-padded copy of the span
        span = np.zeros(hi - lo, np.uint8)
        inner = slice(max(lo, 0), min(hi, len(data)))
        span[inner.start - lo: inner.stop - lo] = data[inner]
        data, start = span, start - lo
    return sliding_window_view(data, width)[start]


def cell_ranges(begin: np.ndarray, stop: np.ndarray, width: int) -> np.ndarray:
    """(m, width) bool: True on cells begin[i] <= j < stop[i] of row i (begin <= stop)."""
    unsigned = np.uint16 if width < 2**16 else np.uint32 if width < 2**32 else np.uint64
    offset = np.arange(width, dtype=unsigned) - begin.astype(unsigned)[:, None]  # wraps below begin
    return offset < (stop - begin).astype(unsigned)[:, None]


def real_cells(lengths: np.ndarray, width: int) -> np.ndarray:
    """(m, width) bool: True on the first lengths[i] cells of row i."""
    return cell_ranges(np.zeros_like(lengths), lengths, width)


def clear_padding(cells: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Zero each row's cells from lengths[i] on, in place; cells: (m, width) uint8."""
    if len(lengths) and (lengths == lengths[0]).all():  # one bucket of equal problems: a slice
        cells[:, lengths[0]:] = 0
    else:
        cells *= real_cells(lengths, cells.shape[1])
    return cells


def place_digits(data: np.ndarray, first: np.ndarray, count: np.ndarray, at: np.ndarray, width: int) -> np.ndarray:
    """(m, width) uint8: row i holds the digit values data[first[i] + k] - 48 at cells at[i] + k
    for k < count[i], and 0 on every other cell. first, count, at: (m,) int64; the run must fit."""
    if len(first) == 0 or width == 0:
        return np.zeros((len(first), width), np.uint8)
    rows = byte_rows(data, first - at, width)  # cell j of row i <- byte first[i] - at[i] + j
    rows -= np.uint8(48)
    if (count == count[0]).all() and (at == at[0]).all():  # one layout for every row (one bucket)
        rows[:, : at[0]] = 0
        rows[:, at[0] + count[0]:] = 0
        return rows
    rows *= cell_ranges(at, at + count, width)
    return rows


def digit_texts(classes: np.ndarray, first: np.ndarray, stop: np.ndarray) -> list[str]:
    """classes: (m, width) uint8 digit values (below 80) -> the text of classes[i, first[i]:stop[i]]
    for each row, as digits, made as one bytes buffer and one split (the str per row is all that
    Python makes)."""
    m, width = classes.shape
    if m == 0:
        return []
    framed = np.empty((m, width + 1), np.uint8)  # each row's digits, then a b"\n" that ends its text
    np.add(classes, np.uint8(48), out=framed[:, :width])
    framed[:, width] = 10
    keep = cell_ranges(first, stop, width + 1)
    keep[:, width] = True
    return framed[keep].tobytes().decode().split("\n")[:m]


def decimal_values(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """(n,) int64: the decimal number of ASCII digits at data[starts[i]:ends[i]] (0 if empty);
    fields of at most 18 digits, so that every value fits int64."""
    width = int((ends - starts).max()) if len(starts) else 0
    values = np.zeros(len(starts), np.int64)
    if width == 0:
        return values
    digits = byte_rows(data, ends - width, width) - np.uint8(48)  # each field right-aligned
    digits *= cell_ranges(width - (ends - starts), np.full_like(starts, width), width)
    for column in digits.T:  # a dozen columns at most: Horner's rule on (n,) int64
        values *= 10
        values += column
    return values


def tape_codes(buffer: np.ndarray, fields: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
    """(m, width) uint8 codes of the 0/1 tapes at buffer[fields[i, 0]:fields[i, 1]] (lengths[i]
    cells), from cell 0: 1 + the bit on a real cell, 0 after it."""
    check_fit(lengths[:, None], (width,))
    if len(lengths) == 0 or width == 0:
        return np.zeros((len(lengths), width), np.uint8)
    cells = byte_rows(buffer, fields[:, 0], width)
    cells -= np.uint8(47)  # '0' -> 1, '1' -> 2
    return clear_padding(cells, lengths)
