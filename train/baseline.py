"""The PyTorch baselines that `sead bench` times beside an engine; never used to answer problems.

- naive: the reference loop (model.solve): one step per call and a host-side check after every
  step, every problem kept in the batch until the last settles;
- compiled: the rule under torch.compile, K steps per call like the runtime's graphs, with the
  host check once per call.

Each is a solve(parsed, max_steps) -> (answers, steps) over problems padded to one shape.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import torch
from onnx import numpy_helper

from sead.runtime.tasks import Parsed, get_task
from .data import encode_problems
from .model import SEAD, ModelConfig, solve


def model_from_onnx(step) -> SEAD:
    """Rebuild the PyTorch model from an exported step's metadata and weights. A rule that reads
    classes by their digits is exported folded (SEAD.step_weights): the same step without them."""
    config = ModelConfig.from_dict(json.loads(step.metadata.model_config))
    model = SEAD(dataclasses.replace(config, read_digits=0))
    weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in step.proto.graph.initializer}
    model.load_state_dict({k: weights[k] for k in model.state_dict()})
    return model.eval()


def _answers(task, symbols: torch.Tensor, settled: torch.Tensor, problems: list[Parsed]) -> list[str | None]:
    symbols = symbols.numpy()
    return [task.decode(symbols[i], p) if settled[i] else None for i, p in enumerate(problems)]


def naive_solve(model: SEAD, problems: list[Parsed], max_steps: int) -> tuple[list[str | None], np.ndarray]:
    """The naive PyTorch loop: the reference loop, from problems to answers."""
    task = get_task(model.config.task)
    x, gens = encode_problems(task.name, problems)
    symbols, steps, converged = solve(model, x, max_steps, gens)
    return _answers(task, symbols, converged, problems), steps.numpy()


class CompiledLoop:
    """The rule under torch.compile, unrolled K steps per call, with a per-step change count
    inside the compiled function and the host check once per call."""

    def __init__(self, model: SEAD, k: int = 16):
        self.model, self.k = model, k
        self.task = get_task(model.config.task)
        self.generations = self.task.convergence == "generations"  # every step counts, changed or not
        self.k_steps = torch.compile(self._k_steps, dynamic=False)

    def _k_steps(self, x, state, budget):
        counts = torch.zeros(x.shape[0], dtype=torch.long)
        rows = (-1,) + (1,) * (x.dim() - 1)  # (B,) -> broadcast over channels and cells
        for i in range(self.k):
            nxt = self.model.step(x, state)
            moved = budget > i
            if not self.generations:
                moved = moved & (nxt != state).flatten(1).any(1)
            state = torch.where(moved.view(rows), nxt, state)
            counts += moved.long()
        return state, counts

    @torch.no_grad()
    def solve(self, problems: list[Parsed], max_steps: int) -> tuple[list[str | None], np.ndarray]:
        x, gens = encode_problems(self.task.name, problems)
        state = self.model.initial_state(x)
        steps = torch.zeros(len(problems), dtype=torch.long)
        limit = gens if gens is not None else torch.full((len(problems),), max_steps + 1)
        running = torch.ones(len(problems), dtype=torch.bool)
        while bool(running.any()):
            budget = torch.where(running, torch.clamp(limit - steps, max=self.k), 0)
            state, counts = self.k_steps(x, state, budget)
            steps += counts
            running &= (steps < limit) if self.generations else (counts == budget) & (steps < limit)
        settled = steps <= max_steps if gens is None else torch.ones(len(problems), dtype=torch.bool)
        symbols = self.model.readout(x, state).argmax(1)
        steps = torch.minimum(steps, torch.tensor(max_steps)) if gens is None else steps
        return _answers(self.task, symbols, settled, problems), steps.numpy()
