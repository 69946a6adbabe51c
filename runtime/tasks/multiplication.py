"""`A*B`: decimal multiplication on a 2-D grid, where every partial product is local.

Layout (digits least significant first): cell (i, j) of row i < n_a holds the partial product
a_i * b_j, so its weight is 10^(i+j); below the n_a rows lies one margin row. The grid is
(n_a + 1) x n_b. The answer is read along an L-shaped edge: product digit k < n_a at (k, 0), and
digit n_a + j at (n_a, j) of the margin row.

A carry-save array multiplier is a synchronous 3x3 automaton on exactly this grid, so a local rule
exists: each cell keeps a digit s and a carry c. Row i adds its partial product, the s of cell
(i-1, j+1) and the c of cell (i-1, j) (both of weight 10^(i+j)); the margin row adds the s above
right, the c above and its left neighbour's carry. Every cell's pair (s, c) at the fixed point,
reached within n_a + n_b steps, is the training target at that cell, as the class s + 10 c (a
signal at every cell, as parity's prefixes are: with s alone the carry would be left for the rule
to invent). The answer digits are the s (class mod 10) along the edge. `csa_state` is that
automaton, in numpy: the targets' source, never the oracle (the oracle is Python's exact
arithmetic).
"""
from __future__ import annotations

import decimal
import math

import numpy as np

from .base import Parsed, Task, operands, random_digits, random_operands

PRODUCTS = sorted({a * b for a in range(10) for b in range(10)})  # the 37 values a digit product takes
PRODUCT_SYMBOL = np.full(82, -1, np.int8)
PRODUCT_SYMBOL[PRODUCTS] = np.arange(len(PRODUCTS), dtype=np.int8)
MARGIN = len(PRODUCTS)  # the margin row's symbol


class Multiplication(Task):
    """`A*B` with ASCII decimal digits; the grid's size: the longer operand's digits."""

    name = "multiplication"
    rank = 2
    input_channels = 1 + len(PRODUCTS) + 1  # mask, one-hot partial product (37), margin row
    classes = 100  # the pair (s, c) of each cell, as s + 10 c: s is the answer digit
    convergence = "fixed_point"
    boundary = "zeros"
    families = ("random", "unequal", "zeros", "all_nines", "powers_of_ten")

    def parse(self, line: str) -> Parsed:
        a, b = operands(line, "*")
        shape = (len(a) + 1, len(b))
        return Parsed(text=line, length=shape[0] * shape[1], a=a, b=b, shape=shape)

    eval_sizes = (6, 12, 24, 48)

    def cells(self, size: int) -> int:
        return (size + 1) * size

    size_words = "digits in the longer operand"

    def size(self, p: Parsed) -> int:
        return max(len(p.a), len(p.b))

    def size_for(self, cells: int) -> int:
        """Operand digits whose grid ((n + 1) x n) has about `cells` cells."""
        return max(1, math.isqrt(max(cells, 1)))

    def diameter(self, p: Parsed) -> int:
        return len(p.a) + len(p.b)  # the carry-save array settles within n_a + n_b steps

    def due_steps(self, p: Parsed) -> np.ndarray:
        """Each cell's readout is due when the carry-save array settles it: row i by step i + 1
        (the light cone: its value depends on cells i rows up), margin cell j by step n_a + 1 + j
        (the ripple carry from its left). Only a deadline: how the rule gets there is its own."""
        na, nb = len(p.a), len(p.b)
        due = np.empty((na + 1, nb), np.int64)
        due[:na] = np.arange(1, na + 1)[:, None]
        due[na] = na + 1 + np.arange(nb)
        return due

    def encode_cells(self, problems: list[Parsed], shape) -> np.ndarray:
        height, width = shape
        cells = np.full((len(problems), height, width), -1, np.int8)
        for k, p in enumerate(problems):
            a, b = _digits_low_first(p.a), _digits_low_first(p.b)
            cells[k, : len(a), : len(b)] = PRODUCT_SYMBOL[np.outer(a, b)]
            cells[k, len(a), : len(b)] = MARGIN
        return cells

    def decode_many(self, symbols: np.ndarray, problems: list[Parsed]) -> list[str]:
        out = []
        for grid, p in zip(np.asarray(symbols), problems):
            na, nb = len(p.a), len(p.b)
            low_first = np.concatenate([grid[:na, 0], grid[na, :nb]]) % 10
            out.append("".join(map(str, low_first[::-1].tolist())).lstrip("0") or "0")
        return out

    def answer(self, p: Parsed) -> str:
        """The exact product (the stdlib's decimal: Python ints refuse to print past 4,300 digits)."""
        ctx = decimal.Context(prec=len(p.a) + len(p.b) + 1, Emax=decimal.MAX_EMAX,
                              traps=[decimal.Inexact, decimal.Rounded])
        return format(ctx.multiply(decimal.Decimal(p.a), decimal.Decimal(p.b)), "f")

    def targets(self, p: Parsed) -> np.ndarray:
        s, c = csa_state(p.a, p.b)
        return s + 10 * c

    def random_line(self, rng: np.random.Generator, size: int, generations: int | None = None) -> str:
        a, b = random_operands(rng, size)
        return f"{a}*{b}"

    def training_line(self, rng: np.random.Generator, size: int, roll: float) -> str:
        if roll < 0.1:  # a hard family now and then: nines, zeros, powers of ten
            family = ("all_nines", "zeros", "powers_of_ten")[int(rng.integers(0, 3))]
            return self.family_lines(family, size, 2, rng)[int(rng.integers(0, 2))]
        return self.random_line(rng, size)

    def family_lines(self, family: str, size: int, count: int, rng: np.random.Generator) -> list[str]:
        if family == "random":
            return [f"{random_digits(rng, size)}*{random_digits(rng, size)}" for _ in range(count)]
        if family == "unequal":  # the other operand shorter, either side
            out = []
            for i in range(count):
                short = random_digits(rng, int(rng.integers(1, size)) if size > 1 else 1)
                out.append(f"{random_digits(rng, size)}*{short}" if i % 2 else f"{short}*{random_digits(rng, size)}")
            return out
        if family == "zeros":
            return ["0" * size + "*" + random_digits(rng, size), random_digits(rng, size) + "*0"][: max(1, count)]
        if family == "all_nines":
            return [f"{'9' * size}*{'9' * size}", f"{'9' * size}*9"][: max(1, count)]
        if family == "powers_of_ten":
            return [f"1{'0' * (size - 1)}*{random_digits(rng, size)}", f"{'9' * size}*1{'0' * (size - 1)}"][: max(1, count)]
        return super().family_lines(family, size, count, rng)

    def canonical_lines(self) -> list[str]:
        return ["0*0", "1*1", "2*3", "9*9", "12*34", "99*99", "7*1000", "123*456"]


def _digits_low_first(text: str) -> np.ndarray:
    return (np.frombuffer(text.encode(), np.uint8)[::-1] - 48).astype(np.int64)


def csa_digits(a: str, b: str) -> np.ndarray:
    """(n_a + 1, n_b) int64: the digit s of every cell at the carry-save array's fixed point."""
    return csa_state(a, b)[0]


def csa_state(a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
    """The carry-save array multiplier run to its fixed point: the digit s and the carry c of
    every cell, each (n_a + 1, n_b) int64. Synchronous updates, as the learned rule makes them."""
    da, db = _digits_low_first(a), _digits_low_first(b)
    na, nb = len(da), len(db)
    product = np.zeros((na + 1, nb), np.int64)
    product[:na] = np.outer(da, db)
    s = np.zeros((na + 1, nb), np.int64)
    c = np.zeros((na + 1, nb), np.int64)
    for _ in range(na + nb + 1):
        up_right = np.zeros_like(s)
        up_right[1:, :-1] = s[:-1, 1:]
        up = np.zeros_like(c)
        up[1:] = c[:-1]
        total = product + up_right + up
        total[na, 1:] += c[na, :-1]  # the margin row: its left neighbour's carry
        new_s, new_c = total % 10, total // 10
        if np.array_equal(new_s, s) and np.array_equal(new_c, c):
            break
        s, c = new_s, new_c
    return s, c
