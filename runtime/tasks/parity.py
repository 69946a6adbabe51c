"""Parity of a bit string, read at its last cell."""
from __future__ import annotations

import numpy as np

from .base import BITS, BitTape, Parsed, Problems, check_symbols, digit_rows, digits, not_blank, random_bits, symbol_texts
from .bulk import scan, vouch


class Parity(BitTape):
    """A string of 0/1; the answer (1 if the count of ones is odd) is read at the last cell. Size: bits."""

    name = "parity"
    convergence = "fixed_point"
    boundary = "zeros"
    families = ("random", "all_zero", "single_one")

    def parse(self, line: str) -> Parsed:
        not_blank(line, "a string of 0/1 bits")
        check_symbols(line, "the bit string", BITS)
        return Parsed(text=line, length=len(line))

    def encode_cells(self, problems: list[Parsed], length: int) -> np.ndarray:
        return digit_rows([q.text for q in problems], length)

    def decode_many(self, symbols: np.ndarray, problems: list[Parsed]) -> list[str]:
        return [t[-1] for t in symbol_texts(symbols, problems)]

    # -- the bulk codec, vectorized: fields are each bit string's offsets [start, end) ------------
    def parse_many(self, lines) -> Problems:
        lines = list(lines)
        lines_scan = scan(self, lines, "0", "1")
        if lines_scan is None:
            return super().parse_many(lines)
        data, starts, ends, _, odd_line = lines_scan
        suspect = starts == ends
        suspect[odd_line] = True
        vouch(self, lines, np.flatnonzero(suspect))  # raises: a suspect bit string is never valid
        return Problems.from_fields(self, lines, data, np.stack([starts, ends], axis=1), ends - starts)

    def decode_classes(self, classes: np.ndarray, problems: Problems, index: np.ndarray) -> list[str]:
        """Each row's class at its last real cell."""
        classes = np.asarray(classes).astype(np.uint8, copy=False)
        last = problems.lengths[np.asarray(index, np.int64)] - 1
        return list((classes[np.arange(len(last)), last] + np.uint8(48)).tobytes().decode())

    def answer(self, p: Parsed) -> str:
        return str(p.text.count("1") % 2)

    def targets(self, p: Parsed) -> np.ndarray:
        """Every prefix of a bit string is a parity problem too: cell i's symbol is the parity of
        bits 0..i (a signal at every cell, not one per tape); the answer is the last cell's."""
        return np.cumsum(digits(p.text)) % 2

    def random_line(self, rng: np.random.Generator, size: int, generations: int | None = None) -> str:
        return random_bits(rng, size)

    def training_line(self, rng: np.random.Generator, size: int, roll: float) -> str:
        if roll >= 0.1:
            return self.random_line(rng, size)
        bits = ["0"] * size  # all zero, or a single one
        if rng.random() < 0.5:
            bits[int(rng.integers(0, size))] = "1"
        return "".join(bits)

    def family_lines(self, family: str, size: int, count: int, rng: np.random.Generator) -> list[str]:
        if family == "all_zero":
            return ["0" * size]
        if family == "single_one":
            return [("0" * size)[:i] + "1" + ("0" * size)[i + 1:] for i in sorted({0, size // 2, size - 1})]
        return super().family_lines(family, size, count, rng)

    def canonical_lines(self) -> list[str]:
        return ["0", "1", "01", "0110", "1111111", "10000000000000000", "00000000000000001"]
