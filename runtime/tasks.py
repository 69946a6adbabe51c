"""The three tasks: text format, validation, cell encoding, answer decoding and the exact oracle.

One definition per task, numpy only, shared by training (targets) and inference (codecs).

A problem becomes a tape of cells, `(C_in, L) float32`. Channel 0 is always the *mask*: 1 on a
real cell, 0 on padding. The model multiplies its state by the mask, so a padded cell is exactly
the same as the world beyond the tape: padding on the right changes neither the answer nor the
number of steps (addition, parity). A rule110 tape is a ring and is never padded.
"""
from __future__ import annotations

import decimal
from typing import NamedTuple

import numpy as np

from .errors import InputError

ASCII_DIGITS = frozenset("0123456789")
MAX_STEPS = 10**12  # the most steps (or rule110 generations) one problem may ask for


def _check_digits(text: str, what: str, allowed: frozenset = ASCII_DIGITS) -> None:
    if not text:
        raise InputError(f"{what} is empty")
    if not text.translate(_DELETE[allowed]):  # fast path, at C speed: nothing but allowed symbols
        return
    for pos, ch in enumerate(text):
        if ch not in allowed:
            kind = "ASCII digits" if allowed is ASCII_DIGITS else "'0' and '1'"
            raise InputError(f"{what} has {ch!r} at position {pos + 1}; only {kind} are allowed")


BITS = frozenset("01")
_DELETE = {ASCII_DIGITS: str.maketrans("", "", "0123456789"), BITS: str.maketrans("", "", "01")}


def _not_blank(line: str, expected: str) -> None:
    if not line.strip():
        raise InputError(f"blank line; expected {expected}")
    if "\r" in line:  # lines.iter_lines splits on LF and drops one CR before it: any CR left is bare
        raise InputError("line endings are bare CR (old Mac); convert to LF")


class Parsed(NamedTuple):
    """A validated problem (a tuple: cheap to make by the million). `a`/`b` are addition's
    operands and rule110's tape; `generations` is rule110's only."""

    text: str
    length: int  # cells on the tape
    generations: int | None = None
    a: str = ""
    b: str = ""


class CellTask:
    """What every task shares: cells are small ints (the compact form a long tape rests in), and
    the one-hot float32 tape an engine reads is made from them in one place."""

    name: str
    input_channels: int

    def encode_cells(self, problems: list[Parsed], length: int) -> np.ndarray:
        """(B, length) int8: each problem's cell symbols from cell 0, -1 on empty cells after it."""
        raise NotImplementedError

    def encode_many(self, problems: list[Parsed], length: int) -> np.ndarray:
        """(B, C_in, length) float32: the mask channel, then the one-hot cell symbols."""
        return one_hot_cells(self.encode_cells(problems, length), self.input_channels)

    def encode(self, p: Parsed) -> np.ndarray:
        return self.encode_many([p], p.length)[0]

    def decode(self, symbols: np.ndarray, p: Parsed) -> str:
        return self.decode_many(symbols[None], [p])[0]


class Addition(CellTask):
    """`A+B`: decimal, most significant digit first. Cell 0 is a leading zero for the final carry.

    A cell holds its column sum a_i + b_i (0..18, one-hot): the answer depends on nothing else,
    and a rule over 19 symbols has far fewer neighbourhoods to get right than one over 100 digit
    pairs. The carries, and the digit they make, are left to the learned rule.
    """

    name = "addition"
    input_channels = 20  # mask, one-hot column sum a_i + b_i (19)
    classes = 10  # the sum's digit at each cell
    convergence = "fixed_point"
    can_pad = True
    boundary = "zeros"

    def parse(self, line: str) -> Parsed:
        _not_blank(line, "'A+B'")
        if line.count("+") != 1:
            raise InputError(f"expected one '+' in 'A+B', found {line.count('+')}")
        left, right = line.split("+")
        a, b = left.strip(" "), right.strip(" ")
        _check_digits(a, "the first operand")
        _check_digits(b, "the second operand")
        return Parsed(text=line, length=max(len(a), len(b)) + 1, a=a, b=b)

    def encode_cells(self, problems: list[Parsed], length: int) -> np.ndarray:
        """(B, length) int8: the column sum a_i + b_i per cell, -1 on the empty cells after a problem."""
        a = _digit_rows([q.a.rjust(q.length, "0") for q in problems], length)
        b = _digit_rows([q.b.rjust(q.length, "0") for q in problems], length)
        return np.where(a < 0, a, a + b)

    def answer(self, p: Parsed) -> str:
        """The exact sum. Python ints are quadratic to convert past a few thousand digits
        (22 s at 1,000,000), so long operands use the stdlib's exact decimal arithmetic."""
        if p.length < 4000:
            return str(int(p.a) + int(p.b))
        ctx = decimal.Context(prec=p.length + 1, Emax=decimal.MAX_EMAX, traps=[decimal.Inexact, decimal.Rounded])
        return str(ctx.add(decimal.Decimal(p.a), decimal.Decimal(p.b)))

    def targets(self, p: Parsed) -> np.ndarray:
        """(L,) int64: the wanted symbol per cell, -1 where nothing is read."""
        return _digits(self.answer(p).rjust(p.length, "0"))

    def decode_many(self, symbols: np.ndarray, problems: list[Parsed]) -> list[str]:
        """(B, L) symbols -> answers."""
        return [t.lstrip("0") or "0" for t in _symbol_texts(symbols, problems)]

    def canonical_lines(self) -> list[str]:
        """A few problems any working model answers: a model's self-test at load."""
        return ["0+0", "1+1", "5+5", "99+1", "123+877", "99999999+1", "9+999", "4+5"]

    def random_line(self, rng: np.random.Generator, digits: int) -> str:
        la = digits
        lb = digits if rng.random() < 0.7 else int(rng.integers(1, digits + 1))
        if rng.random() < 0.5:
            la, lb = lb, la
        return f"{_random_digits(rng, la)}+{_random_digits(rng, lb)}"


class Parity(CellTask):
    """A string of 0/1; the answer (1 if the count of ones is odd) is read at the last cell."""

    name = "parity"
    input_channels = 3  # mask, one-hot bit (2)
    classes = 2
    convergence = "fixed_point"
    can_pad = True
    boundary = "zeros"

    def parse(self, line: str) -> Parsed:
        _not_blank(line, "a string of 0/1 bits")
        _check_digits(line, "the bit string", BITS)
        return Parsed(text=line, length=len(line))

    def encode_cells(self, problems: list[Parsed], length: int) -> np.ndarray:
        return _digit_rows([q.text for q in problems], length)

    def answer(self, p: Parsed) -> str:
        return str(p.text.count("1") % 2)

    def targets(self, p: Parsed) -> np.ndarray:
        """Every prefix of a bit string is a parity problem too: cell i's symbol is the parity of
        bits 0..i (a signal at every cell, not one per tape); the answer is the last cell's."""
        return np.cumsum(_digits(p.text)) % 2

    def decode_many(self, symbols: np.ndarray, problems: list[Parsed]) -> list[str]:
        return [t[-1] for t in _symbol_texts(symbols, problems)]

    def canonical_lines(self) -> list[str]:
        return ["0", "1", "01", "0110", "1111111", "10000000000000000", "00000000000000001"]

    def random_line(self, rng: np.random.Generator, digits: int) -> str:
        return "".join("01"[v] for v in rng.integers(0, 2, digits))


class Rule110(CellTask):
    """`BITS` or `BITS N`: a ring of cells after N >= 0 generations (default 1) of Rule 110."""

    name = "rule110"
    input_channels = 3  # mask, one-hot bit (2)
    classes = 2
    convergence = "generations"  # runs exactly N steps; a ring need not settle
    can_pad = False
    boundary = "ring"

    def parse(self, line: str) -> Parsed:
        _not_blank(line, "'BITS' or 'BITS N'")
        fields = line.split(" ")
        if len(fields) > 2 or "" in fields:
            raise InputError("expected 'BITS' or 'BITS N' separated by one space")
        _check_digits(fields[0], "the tape", BITS)
        generations = 1
        if len(fields) == 2:
            _check_digits(fields[1], "the number of generations")
            digits = fields[1].lstrip("0")
            if len(digits) > len(str(MAX_STEPS)) or int(digits or "0") > MAX_STEPS:  # no int() of 10^6 digits
                raise InputError(f"the number of generations {_abbrev(fields[1])} is above the limit of {MAX_STEPS:,}")
            generations = int(fields[1])
        return Parsed(text=line, length=len(fields[0]), generations=generations, a=fields[0])

    def encode_cells(self, problems: list[Parsed], length: int) -> np.ndarray:
        return _digit_rows([q.a for q in problems], length)

    def answer(self, p: Parsed) -> str:
        tape = np.frombuffer(p.a.encode(), np.uint8) - 48
        for _ in range(p.generations):
            tape = rule110_generation(tape)
        return (tape + 48).astype(np.uint8).tobytes().decode()

    def targets(self, p: Parsed) -> np.ndarray:
        return _digits(self.answer(p))

    def decode_many(self, symbols: np.ndarray, problems: list[Parsed]) -> list[str]:
        return _symbol_texts(symbols, problems)

    def canonical_lines(self) -> list[str]:
        return ["0110", "0110 0", "0001000100 5", "1 3", "111000111000 40", "01101110 12"]

    def random_line(self, rng: np.random.Generator, digits: int, generations: int = 1) -> str:
        bits = "".join("01"[v] for v in rng.integers(0, 2, digits))
        return f"{bits} {generations}"


def _abbrev(text: str, keep: int = 40) -> str:
    return text if len(text) <= keep else f"{text[:20]}... ({len(text):,} digits)"


def rule110_generation(tape: np.ndarray) -> np.ndarray:
    """One generation of Wolfram's Rule 110 on a ring of 0/1 cells (the exact oracle)."""
    left, right = np.roll(tape, 1), np.roll(tape, -1)
    pattern = (left << 2) | (tape << 1) | right
    return ((110 >> pattern) & 1).astype(tape.dtype)


def _digits(text: str) -> np.ndarray:
    return (np.frombuffer(text.encode(), np.uint8) - 48).astype(np.int64)


def _symbol_texts(symbols: np.ndarray, problems: list[Parsed]) -> list[str]:
    """Each problem's cells as a string of digit symbols (one bytes conversion for the batch)."""
    length = symbols.shape[1]
    flat = (np.asarray(symbols, np.uint8) + 48).tobytes().decode()
    return [flat[i * length: i * length + p.length] for i, p in enumerate(problems)]


def _digit_rows(texts: list[str], length: int) -> np.ndarray:
    """(B, length) int8 digits of each text from cell 0, -1 on the empty cells after it."""
    joined = "".join(t.ljust(length, "/") for t in texts).encode()  # '/' is '0' - 1
    return (np.frombuffer(joined, np.int8).reshape(len(texts), length) - 48).astype(np.int8, copy=False)


def one_hot_cells(symbols: np.ndarray, channels: int) -> np.ndarray:
    """(B, L) int cell symbols, -1 for an empty cell -> (B, channels, L) float32: channel 0 is the
    mask (1 on a real cell), then the one-hot symbol. The one expansion of every task's cells."""
    b, length = symbols.shape
    cells = np.zeros((b, channels, length), np.float32)
    real = symbols >= 0
    cells[:, 0] = real
    code = np.where(real, symbols.astype(np.int64) + 1, 0)  # empty cells index the mask channel, then clear it
    np.put_along_axis(cells, code[:, None, :], 1.0, axis=1)
    cells[:, 0] = real
    return cells


def _random_digits(rng: np.random.Generator, n: int) -> str:
    return (rng.integers(0, 10, n).astype(np.uint8) + 48).tobytes().decode()


TASKS = {t.name: t for t in (Addition(), Parity(), Rule110())}


def get_task(name: str):
    try:
        return TASKS[name]
    except KeyError:
        raise InputError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None
