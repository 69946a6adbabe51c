"""The three tasks: text format, validation, cell encoding, answer decoding and the exact oracle.

One definition per task, numpy only, shared by training (targets) and inference (codecs).

A problem becomes a tape of cells, `(C_in, L) float32`. Channel 0 is always the *mask*: 1 on a
real cell, 0 on padding. The model multiplies its state by the mask, so a padded cell is exactly
the same as the world beyond the tape: padding on the right changes neither the answer nor the
number of steps (addition, parity). A rule110 tape is a ring and is never padded.
"""
from __future__ import annotations

import decimal
from dataclasses import dataclass

import numpy as np

from .errors import InputError

ASCII_DIGITS = frozenset("0123456789")


def _check_digits(text: str, what: str, allowed: frozenset = ASCII_DIGITS) -> None:
    if not text:
        raise InputError(f"{what} is empty")
    for pos, ch in enumerate(text):
        if ch not in allowed:
            kind = "ASCII digits" if allowed is ASCII_DIGITS else "'0' and '1'"
            raise InputError(f"{what} has {ch!r} at position {pos + 1}; only {kind} are allowed")


def _not_blank(line: str, expected: str) -> None:
    if not line.strip():
        raise InputError(f"blank line; expected {expected}")


@dataclass(frozen=True)
class Parsed:
    """A validated problem. `tape` is the symbols per cell; `generations` only for rule110."""

    text: str
    length: int  # cells on the tape
    generations: int | None = None
    a: str = ""
    b: str = ""


class Addition:
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

    def encode(self, p: Parsed) -> np.ndarray:
        cells = np.zeros((self.input_channels, p.length), np.float32)
        cells[0] = 1.0
        column = np.zeros(p.length, np.int64)
        for operand in (p.a, p.b):
            column[p.length - len(operand):] += np.frombuffer(operand.encode(), np.uint8) - 48
        cells[1 + column, np.arange(p.length)] = 1.0
        return cells

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

    def decode(self, symbols: np.ndarray, p: Parsed) -> str:
        text = (np.asarray(symbols[: p.length], np.uint8) + 48).tobytes().decode()
        return text.lstrip("0") or "0"

    def random_line(self, rng: np.random.Generator, digits: int) -> str:
        la = digits
        lb = digits if rng.random() < 0.7 else int(rng.integers(1, digits + 1))
        if rng.random() < 0.5:
            la, lb = lb, la
        return f"{_random_digits(rng, la)}+{_random_digits(rng, lb)}"


class Parity:
    """A string of 0/1; the answer (1 if the count of ones is odd) is read at the last cell."""

    name = "parity"
    input_channels = 3  # mask, one-hot bit (2)
    classes = 2
    convergence = "fixed_point"
    can_pad = True
    boundary = "zeros"

    def parse(self, line: str) -> Parsed:
        _not_blank(line, "a string of 0/1 bits")
        _check_digits(line, "the bit string", frozenset("01"))
        return Parsed(text=line, length=len(line))

    def encode(self, p: Parsed) -> np.ndarray:
        return _encode_bits(p.text, p.length)

    def answer(self, p: Parsed) -> str:
        return str(p.text.count("1") % 2)

    def targets(self, p: Parsed) -> np.ndarray:
        """Every prefix of a bit string is a parity problem too: cell i's symbol is the parity of
        bits 0..i (a signal at every cell, not one per tape); the answer is the last cell's."""
        return np.cumsum(_digits(p.text)) % 2

    def decode(self, symbols: np.ndarray, p: Parsed) -> str:
        return str(int(symbols[p.length - 1]))

    def random_line(self, rng: np.random.Generator, digits: int) -> str:
        return "".join("01"[v] for v in rng.integers(0, 2, digits))


class Rule110:
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
        _check_digits(fields[0], "the tape", frozenset("01"))
        generations = 1
        if len(fields) == 2:
            _check_digits(fields[1], "the number of generations")
            generations = int(fields[1])
        return Parsed(text=line, length=len(fields[0]), generations=generations, a=fields[0])

    def encode(self, p: Parsed) -> np.ndarray:
        return _encode_bits(p.a, p.length)

    def answer(self, p: Parsed) -> str:
        tape = np.frombuffer(p.a.encode(), np.uint8) - 48
        for _ in range(p.generations):
            tape = rule110_generation(tape)
        return (tape + 48).astype(np.uint8).tobytes().decode()

    def targets(self, p: Parsed) -> np.ndarray:
        return _digits(self.answer(p))

    def decode(self, symbols: np.ndarray, p: Parsed) -> str:
        return (np.asarray(symbols[: p.length], np.uint8) + 48).tobytes().decode()

    def random_line(self, rng: np.random.Generator, digits: int, generations: int = 1) -> str:
        bits = "".join("01"[v] for v in rng.integers(0, 2, digits))
        return f"{bits} {generations}"


def rule110_generation(tape: np.ndarray) -> np.ndarray:
    """One generation of Wolfram's Rule 110 on a ring of 0/1 cells (the exact oracle)."""
    left, right = np.roll(tape, 1), np.roll(tape, -1)
    pattern = (left << 2) | (tape << 1) | right
    return ((110 >> pattern) & 1).astype(tape.dtype)


def _digits(text: str) -> np.ndarray:
    return (np.frombuffer(text.encode(), np.uint8) - 48).astype(np.int64)


def _encode_bits(bits: str, length: int) -> np.ndarray:
    cells = np.zeros((3, length), np.float32)
    cells[0] = 1.0
    cells[1 + _digits(bits), np.arange(length)] = 1.0
    return cells


def _random_digits(rng: np.random.Generator, n: int) -> str:
    return (rng.integers(0, 10, n).astype(np.uint8) + 48).tobytes().decode()


TASKS = {t.name: t for t in (Addition(), Parity(), Rule110())}


def get_task(name: str):
    try:
        return TASKS[name]
    except KeyError:
        raise InputError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None
