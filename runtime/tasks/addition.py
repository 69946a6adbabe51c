"""`A+B`: decimal addition on a tape, one cell per digit column."""
from __future__ import annotations

import decimal

import numpy as np

from .base import Parsed, Problems, Task, digit_rows, digits, operands, random_digits, random_operands, symbol_texts
from .bulk import check_fit, clear_padding, digit_texts, place_digits, real_cells, scan, vouch


class Addition(Task):
    """`A+B`: decimal, most significant digit first. Cell 0 is a leading zero for the final carry.

    A cell holds its column sum a_i + b_i (0..18, one-hot): the answer depends on nothing else,
    and a rule over 19 symbols has far fewer neighbourhoods to get right than one over 100 digit
    pairs. The carries, and the digit they make, are left to the learned rule. Size: operand digits.
    """

    name = "addition"
    input_channels = 20  # mask, one-hot column sum a_i + b_i (19)
    classes = 10  # the sum's digit at each cell
    convergence = "fixed_point"
    boundary = "zeros"
    families = ("random", "mixed_lengths", "carry_chain")

    def parse(self, line: str) -> Parsed:
        a, b = operands(line, "+")
        return Parsed(line, max(len(a), len(b)) + 1, None, a, b)  # positional: a third faster by the million

    def encode_cells(self, problems: list[Parsed], length: int) -> np.ndarray:
        """(B, length) int8: the column sum a_i + b_i per cell, -1 on the empty cells after a problem."""
        a = digit_rows([q.a.rjust(q.length, "0") for q in problems], length)
        b = digit_rows([q.b.rjust(q.length, "0") for q in problems], length)
        return np.where(a < 0, a, a + b)

    def decode_many(self, symbols: np.ndarray, problems: list[Parsed]) -> list[str]:
        return [t.lstrip("0") or "0" for t in symbol_texts(symbols, problems)]

    # -- the bulk codec, vectorized: fields are each problem's operand offsets [a0, a1, b0, b1) ----
    def parse_many(self, lines) -> Problems:
        lines = list(lines)
        lines_scan = scan(self, lines, "0", "9")
        if lines_scan is None:
            return super().parse_many(lines)
        data, starts, ends, odd, odd_line = lines_scan
        is_plus = data[odd] == 43
        plus = ends.copy()
        plus[odd_line[is_plus]] = odd[is_plus]
        # the lines that are not plainly DIGITS+DIGITS: bad, or spaced ('12 + 34'), for parse to judge
        suspect = np.bincount(odd_line[is_plus], minlength=len(lines)) != 1
        suspect[odd_line[~is_plus]] = True
        suspect |= (plus == starts) | (plus + 1 >= ends)
        fields = np.stack([starts, plus, plus + 1, ends], axis=1)
        for k, p in vouch(self, lines, np.flatnonzero(suspect)).items():
            a0 = starts[k] + lines[k].index(p.a)
            b0 = starts[k] + lines[k].index(p.b, lines[k].index("+") + 1)
            fields[k] = a0, a0 + len(p.a), b0, b0 + len(p.b)
        lengths = np.maximum(fields[:, 1] - fields[:, 0], fields[:, 3] - fields[:, 2]) + 1
        return Problems.from_fields(self, lines, data, fields, lengths)

    def codes(self, problems: Problems, index: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        if problems.fields is None:
            return super().codes(problems, index, shape)
        index = np.asarray(index, np.int64)
        (width,) = shape
        lengths = problems.lengths[index]
        check_fit(lengths[:, None], shape)
        a0, a1, b0, b1 = problems.fields[index].T
        cells = place_digits(problems.buffer, a0, a1 - a0, lengths - (a1 - a0), width)  # right-aligned
        cells += place_digits(problems.buffer, b0, b1 - b0, lengths - (b1 - b0), width)
        cells += np.uint8(1)  # code 1 + a_i + b_i on every real cell
        return clear_padding(cells, lengths)

    def decode_classes(self, classes: np.ndarray, problems: Problems, index: np.ndarray) -> list[str]:
        """Each row's first `length` digits without leading zeros ("0" if all are zero)."""
        classes = np.asarray(classes).astype(np.uint8, copy=False)
        lengths = problems.lengths[np.asarray(index, np.int64)]
        if len(lengths) == 0:
            return []
        nonzero = (classes != 0) & real_cells(lengths, classes.shape[1])
        first = nonzero.argmax(1)  # the first nonzero digit; 0 in a row without one
        first = np.where(nonzero[np.arange(len(first)), first], first, lengths - 1)
        return digit_texts(classes, first, lengths)

    def answer(self, p: Parsed) -> str:
        """The exact sum. Python ints are quadratic to convert past a few thousand digits
        (22 s at 1,000,000), so long operands use the stdlib's exact decimal arithmetic."""
        if p.length < 4000:
            return str(int(p.a) + int(p.b))
        ctx = decimal.Context(prec=p.length + 1, Emax=decimal.MAX_EMAX, traps=[decimal.Inexact, decimal.Rounded])
        return str(ctx.add(decimal.Decimal(p.a), decimal.Decimal(p.b)))

    def targets(self, p: Parsed) -> np.ndarray:
        return digits(self.answer(p).rjust(p.length, "0"))

    def size_for(self, cells: int) -> int:
        return max(1, cells - 1)  # cell 0 holds the final carry

    def random_line(self, rng: np.random.Generator, size: int, generations: int | None = None) -> str:
        a, b = random_operands(rng, size)
        return f"{a}+{b}"

    def training_line(self, rng: np.random.Generator, size: int, roll: float) -> str:
        return _carry_chain(rng, size) if roll < 0.25 else self.random_line(rng, size)

    def family_lines(self, family: str, size: int, count: int, rng: np.random.Generator) -> list[str]:
        if family == "random":
            return [f"{random_digits(rng, size)}+{random_digits(rng, size)}" for _ in range(count)]
        if family == "mixed_lengths":  # operands of different lengths, either side longer
            out = []
            for i in range(count):
                short = random_digits(rng, int(rng.integers(1, size)) if size > 1 else 1)
                out.append(f"{random_digits(rng, size)}+{short}" if i % 2 else f"{short}+{random_digits(rng, size)}")
            return out
        if family == "carry_chain":  # 99...9 + 1 and friends: one carry crosses the whole tape
            lines = [f"{'9' * size}+1", f"1+{'9' * size}", f"{'9' * size}+{'9' * size}",
                     f"{'9' * (size - 1)}5+5" if size > 1 else "5+5"]
            return lines[: max(1, count)]
        return super().family_lines(family, size, count, rng)

    def canonical_lines(self) -> list[str]:
        return ["0+0", "1+1", "5+5", "99+1", "123+877", "99999999+1", "9+999", "4+5"]


def _carry_chain(rng: np.random.Generator, n: int) -> str:
    """An addition whose digit pairs sum to 9 over a random span, so a carry must travel far."""
    a = rng.integers(0, 10, n)
    b = rng.integers(0, 10, n)
    start = int(rng.integers(0, n))
    stop = int(rng.integers(start, n + 1))
    b[start:stop] = 9 - a[start:stop]
    if stop < n and rng.random() < 0.7:  # a carry enters the chain from below
        a[stop] = int(rng.integers(1, 10))
        b[stop] = int(rng.integers(10 - a[stop], 10))
    text = lambda d: (d.astype(np.uint8) + 48).tobytes().decode()
    return f"{text(a)}+{text(b)}"
