"""Training batches: random short problems (at most 16 cells of input) encoded by the task codecs."""
from __future__ import annotations

import numpy as np
import torch

from sead.runtime.tasks import Parsed, get_task

MAX_TRAIN_CELLS = 16  # operand digits / bits / ring cells seen in training


def sample_lines(task_name: str, rng: np.random.Generator, count: int, max_len: int = MAX_TRAIN_CELLS,
                 length: int | None = None) -> list[str]:
    """Training problems of size 1..max_len (or exactly `length`), hard families mixed in by the task."""
    task = get_task(task_name)
    lines = []
    for _ in range(count):
        size = length or int(rng.integers(1, max_len + 1))
        lines.append(task.training_line(rng, size, rng.random()))
    return lines


def encode_problems(task_name: str, problems: list[Parsed]):
    """-> problem (B, C_in, *S) float32, generations (B,) int64 or None. S is the largest shape of
    the problems (L on a tape, H, W on a grid): smaller ones are padded on the right (and below)
    with empty cells (mask 0). Rings are never padded, so callers batch them by length."""
    task = get_task(task_name)
    shape = tuple(np.max([task.shape(p) for p in problems], axis=0).tolist())  # (L,) or (H, W)
    x = np.ascontiguousarray(task.encode_many(problems, shape))
    gens = None
    if task.convergence == "generations":
        gens = torch.tensor([p.generations for p in problems], dtype=torch.long)
    return torch.from_numpy(x), gens


def encode_batch(task_name: str, problems: list[Parsed]):
    """-> problem (B, C_in, *S) float32, targets (B, *S) int64 (-1 = not read), generations (B,) or
    None: encode_problems and the task's targets, padded alike."""
    task = get_task(task_name)
    x, gens = encode_problems(task_name, problems)
    y = np.full((len(problems),) + tuple(x.shape[2:]), -1, np.int64)
    for i, p in enumerate(problems):
        y[(i,) + tuple(slice(0, d) for d in task.shape(p))] = task.targets(p)
    return x, torch.from_numpy(y), gens


def due_batch(task_name: str, problems: list[Parsed], shape: tuple[int, ...]) -> torch.Tensor:
    """(B, *shape) int64: the step from which each cell's readout must be right (the task's
    due_steps), 0 on padding (never read: its target is -1)."""
    task = get_task(task_name)
    due = np.zeros((len(problems),) + tuple(shape), np.int64)
    for i, p in enumerate(problems):
        due[(i,) + tuple(slice(0, d) for d in task.shape(p))] = task.due_steps(p)
    return torch.from_numpy(due)
