"""Training batches: random short problems (at most 16 cells of input) encoded by the task codecs."""
from __future__ import annotations

import numpy as np
import torch

from sead.runtime.tasks import Parsed, get_task

MAX_TRAIN_CELLS = 16  # operand digits / bits / ring cells seen in training


def sample_lines(task_name: str, rng: np.random.Generator, count: int, max_len: int = MAX_TRAIN_CELLS,
                 max_generations: int = 6, length: int | None = None) -> list[str]:
    """Random problems of 1..max_len digits (or exactly `length`), with the hard families mixed in."""
    task = get_task(task_name)
    lines = []
    for _ in range(count):
        n = length or int(rng.integers(1, max_len + 1))
        roll = rng.random()
        if task_name == "addition" and roll < 0.25:
            lines.append(_carry_chain(rng, n))
        elif task_name == "parity" and roll < 0.1:
            bits = ["0"] * n
            if rng.random() < 0.5:
                bits[int(rng.integers(0, n))] = "1"
            lines.append("".join(bits))
        elif task_name == "rule110":
            lines.append(task.random_line(rng, n, int(rng.integers(0, max_generations + 1))))
        else:
            lines.append(task.random_line(rng, n))
    return lines


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


def encode_batch(task_name: str, problems: list[Parsed]):
    """-> problem (B, C_in, L) float32, targets (B, L) int64 (-1 = not read), generations (B,) or None.

    Shorter problems are padded on the right with empty cells (mask 0); rule110 rings must not be
    mixed with other lengths, so callers batch them by length.
    """
    task = get_task(task_name)
    length = max(p.length for p in problems)
    x = task.encode_many(problems, length)
    y = np.full((len(problems), length), -1, np.int64)
    for i, p in enumerate(problems):
        y[i, : p.length] = task.targets(p)
    gens = None
    if task.convergence == "generations":
        gens = torch.tensor([p.generations for p in problems], dtype=torch.long)
    return torch.from_numpy(x), torch.from_numpy(y), gens
