"""Wolfram's Rule 110 on a ring, for a given number of generations."""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from .base import (BITS, MAX_STEPS, BitTape, Parsed, Problems, check_symbols, digit_rows, digits, not_blank, random_bits,
                   symbol_texts)
from .bulk import decimal_values, digit_texts, scan, vouch

TRAIN_MAX_GENERATIONS = 6  # training problems run 0 to this many generations


class Rule110(BitTape):
    """`BITS` or `BITS N`: a ring of cells after N >= 0 generations (default 1) of Rule 110. Size: cells."""

    name = "rule110"
    convergence = "generations"  # runs exactly N steps; a ring need not settle
    boundary = "ring"

    def parse(self, line: str) -> Parsed:
        not_blank(line, "'BITS' or 'BITS N'")
        fields = line.split(" ")
        if len(fields) > 2 or "" in fields:
            raise InputError("expected 'BITS' or 'BITS N' separated by one space")
        check_symbols(fields[0], "the tape", BITS)
        generations = 1
        if len(fields) == 2:
            check_symbols(fields[1], "the number of generations")
            count = fields[1].lstrip("0")
            if len(count) > len(str(MAX_STEPS)) or int(count or "0") > MAX_STEPS:  # no int() of 10^6 digits
                raise InputError(f"the number of generations {_abbrev(fields[1])} is above the limit of {MAX_STEPS:,}")
            generations = int(fields[1])
        return Parsed(text=line, length=len(fields[0]), generations=generations, a=fields[0])

    def encode_cells(self, problems: list[Parsed], length: int) -> np.ndarray:
        return digit_rows([q.a for q in problems], length)

    def decode_many(self, symbols: np.ndarray, problems: list[Parsed]) -> list[str]:
        return symbol_texts(symbols, problems)

    # -- the bulk codec, vectorized: fields are each tape's offsets [start, end) ---------------------
    def parse_many(self, lines) -> Problems:
        lines = list(lines)
        lines_scan = scan(self, lines, "0", "1")  # the odd bytes: spaces, the digits 2-9 of N, and junk
        if lines_scan is None:
            return super().parse_many(lines)
        data, starts, ends, odd, odd_line = lines_scan
        odd_byte = data[odd]
        is_space = odd_byte == 32
        space_count = np.bincount(odd_line[is_space], minlength=len(lines))
        tape_end = ends.copy()
        tape_end[odd_line[is_space]] = odd[is_space]
        count_start = np.where(space_count > 0, tape_end + 1, ends)  # N: [count_start, ends)
        # the lines that are not plainly 'BITS' or 'BITS N' with N of at most 13 digits, for parse to judge
        suspect = (space_count > 1) | (tape_end == starts) | ((space_count > 0) & (count_start == ends))
        in_tape = odd < tape_end[odd_line]
        suspect[odd_line[~is_space & (in_tape | (odd_byte < 48) | (odd_byte > 57))]] = True
        suspect |= ends - count_start > len(str(MAX_STEPS))
        generations = np.ones(len(lines), np.int64)  # no N: one generation
        counted = ~suspect & (space_count > 0)  # a suspect's N may hold junk, or overflow int64
        generations[counted] = decimal_values(data, count_start[counted], ends[counted])
        suspect |= generations > MAX_STEPS
        for k, p in vouch(self, lines, np.flatnonzero(suspect)).items():  # e.g. N with many leading zeros
            tape_end[k], generations[k] = starts[k] + p.length, p.generations
        return Problems.from_fields(self, lines, data, np.stack([starts, tape_end], axis=1), tape_end - starts,
                                    generations)

    def decode_classes(self, classes: np.ndarray, problems: Problems, index: np.ndarray) -> list[str]:
        """Each row's first `length` classes as bits."""
        classes = np.asarray(classes).astype(np.uint8, copy=False)
        lengths = problems.lengths[np.asarray(index, np.int64)]
        return digit_texts(classes, np.zeros_like(lengths), lengths)

    def answer(self, p: Parsed) -> str:
        tape = np.frombuffer(p.a.encode(), np.uint8) - 48
        for _ in range(p.generations):
            tape = rule110_generation(tape)
        return (tape + 48).astype(np.uint8).tobytes().decode()

    def targets(self, p: Parsed) -> np.ndarray:
        return digits(self.answer(p))

    def random_line(self, rng: np.random.Generator, size: int, generations: int | None = None) -> str:
        return f"{random_bits(rng, size)} {1 if generations is None else generations}"

    def training_line(self, rng: np.random.Generator, size: int, roll: float) -> str:
        generations = int(rng.integers(0, TRAIN_MAX_GENERATIONS + 1))
        return self.random_line(rng, size, generations)

    def family_lines(self, family: str, size: int, count: int, rng: np.random.Generator) -> list[str]:
        if family == "random":  # short and long runs: 1, 100 and 1,000 generations
            return [f"{random_bits(rng, size)} {g}" for g in (1, 100, 1000) for _ in range(max(1, count // 3))]
        if family == "all_rings":  # every ring of 1 to `size` cells, 60 generations (2^(size+1) - 2 rings)
            return [format(v, f"0{n}b") + " 60" for n in range(1, size + 1) for v in range(2 ** n)]
        return super().family_lines(family, size, count, rng)

    def canonical_lines(self) -> list[str]:
        return ["0110", "0110 0", "0001000100 5", "1 3", "111000111000 40", "01101110 12"]

    def generation_targets(self, p: Parsed, horizon: int) -> np.ndarray:
        tapes = [digits(p.a)]
        for _ in range(horizon):
            tapes.append(rule110_generation(tapes[-1]))
        return np.stack(tapes)


def rule110_generation(tape: np.ndarray) -> np.ndarray:
    """One generation of Wolfram's Rule 110 on a ring of 0/1 cells (the exact oracle)."""
    left, right = np.roll(tape, 1), np.roll(tape, -1)
    pattern = (left << 2) | (tape << 1) | right
    return ((110 >> pattern) & 1).astype(tape.dtype)


def _abbrev(text: str, keep: int = 40) -> str:
    return text if len(text) <= keep else f"{text[:20]}... ({len(text):,} digits)"
