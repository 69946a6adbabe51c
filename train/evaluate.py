"""`sead eval`: exact-match accuracy of whole answers against exact oracles, with steps used.

The oracle is each task's exact answer (Task.answer: exact arithmetic, a count, direct
simulation), never the model. Every problem runs through the PyTorch reference loop (`model.solve`) until
its state stops changing, its generations run out, or the step cap is reached; a problem that
hit the cap counts as wrong and as not converged.

Activity says how much of the dense work (cells x steps) a solve really needed: changed cells
per step, the most changes of any one cell, and dense cell-updates per changed-cell event.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from sead.runtime.tasks import get_task
from .data import encode_batch
from .model import SEAD, solve

DEFAULT_LENGTHS = (16, 100, 1000)
CELL_BUDGET = 1 << 16  # cells per length and family: many short problems, few long ones


@dataclass(frozen=True)
class EvalRow:
    task: str
    family: str
    length: int
    problems: int
    exact: int
    converged: int
    steps_mean: float
    steps_max: int
    changed_per_step: float = float("nan")  # changed cells per step, mean over the problems
    max_changes: int = -1  # the most changes of any one cell in any solve
    dense_per_change: float = float("nan")  # sum of cells x steps / sum of changed-cell events

    @property
    def accuracy(self) -> float:
        return self.exact / self.problems if self.problems else float("nan")


class LineResults(NamedTuple):
    """Per problem, all (N,) arrays: outcome, steps and activity (see `model.Activity`)."""

    exact: np.ndarray
    converged: np.ndarray
    steps: np.ndarray
    cells: np.ndarray
    changes: np.ndarray
    max_changes: np.ndarray

    def row(self, task: str, family: str, length: int) -> EvalRow:
        steps = np.maximum(self.steps, 1)
        return EvalRow(task, family, length, len(self.exact), int(self.exact.sum()), int(self.converged.sum()),
                       float(self.steps.mean()), int(self.steps.max()),
                       changed_per_step=float((self.changes / steps).mean()),
                       max_changes=int(self.max_changes.max()),
                       dense_per_change=float((self.cells * self.steps).sum() / max(1, self.changes.sum())))


def family_lines(task_name: str, family: str, length: int, count: int, rng: np.random.Generator) -> list[str]:
    """Up to `count` problems of size `length` from one of the task's families (its own hook)."""
    return get_task(task_name).family_lines(family, length, count, rng)


def evaluate_lines(model: SEAD, lines: list[str], max_steps: int | None = None,
                   batch_cells: int = 1 << 15) -> LineResults:
    """Solve problem texts with the reference loop and check each answer against the oracle."""
    task = get_task(model.config.task)
    parsed = [task.parse(line) for line in lines]
    out = LineResults(*(np.zeros(len(parsed), dtype) for dtype in (bool, bool, np.int64, np.int64, np.int64, np.int64)))
    shapes = [task.shape(p) for p in parsed]  # problems of one shape share a batch
    order = sorted(range(len(parsed)), key=lambda i: shapes[i])
    i = 0
    while i < len(order):
        shape = shapes[order[i]]
        group = [j for j in order[i:] if shapes[j] == shape][: max(1, batch_cells // int(np.prod(shape)))]
        i += len(group)
        x, _, gens = encode_batch(task.name, [parsed[j] for j in group])
        cap = int(gens.max()) if gens is not None else (max_steps or task.step_cap(parsed[group[0]]))
        symbols, s, c, act = solve(model, x, cap, gens, activity=True)
        for row, j in enumerate(group):
            out.converged[j] = bool(c[row])
            out.steps[j] = int(s[row])
            out.exact[j] = out.converged[j] and task.decode(symbols[row].numpy(), parsed[j]) == task.answer(parsed[j])
            out.cells[j], out.changes[j], out.max_changes[j] = int(act.cells[row]), int(act.changes[row]), int(act.max_changes[row])
    return out


@torch.no_grad()
def evaluate(model: SEAD, lengths=DEFAULT_LENGTHS, seed: int = 0, max_problems: int = 256,
             max_steps: int | None = None, progress=None) -> list[EvalRow]:
    rng = np.random.default_rng(seed)
    rows = []
    for length in lengths:
        for family in get_task(model.config.task).families:
            count = max(1, min(max_problems, CELL_BUDGET // get_task(model.config.task).cells(length)))
            lines = family_lines(model.config.task, family, length, count, rng)
            rows.append(evaluate_lines(model, lines, max_steps).row(model.config.task, family, length))
            if progress:
                progress(rows[-1])
    return rows


def format_table(rows: list[EvalRow]) -> str:
    head = (f"{'task':<9} {'family':<14} {'length':>9} {'problems':>8} {'exact':>8} {'fixed pt':>8} "
            f"{'steps mean':>10} {'max':>6} {'changed/step':>12} {'max changes':>11} {'dense/changed':>13}")
    lines = [head, "-" * len(head)]
    for r in rows:
        fixed = "n/a" if get_task(r.task).convergence == "generations" else f"{100 * r.converged / r.problems:.0f}%"
        lines.append(f"{r.task:<9} {r.family:<14} {r.length:>9,} {r.problems:>8} {100 * r.accuracy:>7.1f}% "
                     f"{fixed:>8} {r.steps_mean:>10.1f} {r.steps_max:>6} {r.changed_per_step:>12.1f} "
                     f"{r.max_changes:>11} {r.dense_per_change:>13.1f}")
    return "\n".join(lines)
