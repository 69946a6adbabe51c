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
