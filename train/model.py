"""The SEAD model: one radius-1 local rule over a 1D tape, iterated until the state settles.

    state_{t+1} = mask * hardsign(W2 relu(W1 *3 [problem; state_t] + b1) + b2)
    logits_t    = V relu(U [problem; state_t] + c) + d          (per cell, 1x1)

`*3` is a width-3 convolution (locality: one cell per step), the same weights at every cell and
every step (symmetry). The state is discrete, each channel -1 or +1 (0 on padding and before the
first step), so "one more step changes nothing" is an exact test (stability). Training
differentiates through the sign with a straight-through tanh gradient.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

MODEL_CONFIG_VERSION = 1


@dataclass(frozen=True)
class ModelConfig:
    task: str
    input_channels: int
    classes: int
    boundary: str  # "zeros" (a line) or "ring"
    state_channels: int = 8
    hidden: int = 32
    readout_hidden: int = 32
    version: int = MODEL_CONFIG_VERSION
    rank: int = 1  # 1: a tape, width-3 convolutions; 2: a grid, 3x3 ones

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        if data.get("version") != MODEL_CONFIG_VERSION:
            raise ValueError(f"model config version {data.get('version')!r}, expected {MODEL_CONFIG_VERSION}")
        return cls(**data)


def hardsign(pre: torch.Tensor) -> torch.Tensor:
    """+1 where pre > 0 else -1; gradient of tanh (straight-through)."""
    hard = torch.where(pre > 0, 1.0, -1.0)
    if not pre.requires_grad:
        return hard
    soft = torch.tanh(pre)
    return soft + (hard - soft).detach()


class SEAD(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c_in = config.input_channels + config.state_channels
        conv = {1: nn.Conv1d, 2: nn.Conv2d}[config.rank]
        self.rule_in = conv(c_in, config.hidden, 3)
        self.rule_out = conv(config.hidden, config.state_channels, 1)
        self.read_in = conv(c_in, config.readout_hidden, 1)
        self.read_out = conv(config.readout_hidden, config.classes, 1)

    def initial_state(self, problem: torch.Tensor) -> torch.Tensor:
        return problem.new_zeros(problem.shape[0], self.config.state_channels, *problem.shape[2:])

    def pad(self, z: torch.Tensor) -> torch.Tensor:
        if self.config.boundary == "ring":
            return torch.cat([z[:, :, -1:], z, z[:, :, :1]], dim=2)
        return F.pad(z, (1, 1) * self.config.rank)

    def preactivation(self, problem: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """(B, C_in, *S), (B, C_s, *S) -> (B, C_s, *S): the rule before the sign (S: L or H, W)."""
        z = self.pad(torch.cat([problem, state], dim=1))
        return self.rule_out(F.relu(self.rule_in(z)))

    def step(self, problem: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """One local update. problem (B, C_in, L) float32, state (B, C_s, L) in {-1, 0, +1}."""
        mask = problem[:, :1]
        return hardsign(self.preactivation(problem, state)) * mask

    def readout(self, problem: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """(B, C_in, L), (B, C_s, L) -> logits (B, classes, L)."""
        z = torch.cat([problem, state], dim=1)
        return self.read_out(F.relu(self.read_in(z)))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_cell_update(self) -> int:
        """The rule's two convolutions for one cell and one step (2 FLOPs per multiply-add); the
        readout runs once per solve and is not counted. Same count as runtime.bench.model_costs."""
        c = self.config
        return 2 * c.hidden * (c.input_channels + c.state_channels) * 3 ** c.rank + 2 * c.state_channels * c.hidden


class Activity(NamedTuple):
    """How much work a solve did, per problem, all (B,) int64.

    A cell *changes* at a step when any of its state channels does; step 1 changes every real cell
    (the state starts at 0). Dense work is cells x steps; a runtime that updates only the cells
    around changes does about `changes` cell updates."""

    cells: torch.Tensor  # real cells on the tape (mask)
    changes: torch.Tensor  # changed-cell events, summed over the steps run
    max_changes: torch.Tensor  # the most changes of any one cell


@torch.no_grad()
def solve(model: SEAD, problem: torch.Tensor, max_steps: int, generations: torch.Tensor | None = None,
          activity: bool = False):
    """Reference loop: iterate until each problem's state stops changing (or its generations run out).

    Returns (symbols (B, *S) int64, steps (B,) int64, converged (B,) bool), and an `Activity` as a
    fourth item when `activity` is set. `steps` counts the updates that changed the state.
    max_steps is the step cap: a problem may take that many changing steps, plus the one that
    changes nothing and so proves its fixed point; one that is still changing after them did not
    converge (steps = max_steps). Generation tasks (rule110) run exactly their generations
    whatever max_steps says.
    """
    b = problem.shape[0]
    state = model.initial_state(problem)
    steps = torch.zeros(b, dtype=torch.long)
    active = torch.ones(b, dtype=torch.bool)
    converged = torch.zeros(b, dtype=torch.bool)
    per_cell = torch.zeros(b, *problem.shape[2:], dtype=torch.long) if activity else None
    rows = lambda v: v.view(-1, *[1] * (problem.dim() - 1))  # (B,) -> broadcast over channels and cells
    horizon = int(generations.max()) if generations is not None and b else max_steps + 1
    for t in range(horizon):
        if generations is not None:
            active = generations > t
        if not active.any():
            break
        nxt = model.step(problem, state)
        moved = (nxt != state).any(1)  # (B, *S): cells that change at this step
        if generations is None:
            changed = moved.flatten(1).any(1) & active
            converged |= active & ~changed
            active = changed
        else:
            changed = active
        state = torch.where(rows(changed), nxt, state)
        steps += changed.long()
        if activity:
            per_cell += (moved & rows(changed)[:, 0]).long()
    if generations is not None:
        converged = generations <= steps
    else:
        steps = torch.minimum(steps, torch.tensor(max_steps))
    symbols = model.readout(problem, state).argmax(1)
    if not activity:
        return symbols, steps, converged
    cells = problem[:, 0].flatten(1).sum(1).long()
    per_cell = per_cell.flatten(1)
    return symbols, steps, converged, Activity(cells, per_cell.sum(1), per_cell.max(1).values)
