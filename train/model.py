"""The SEAD model: one radius-1 local rule over a tape (or a grid), iterated until the state settles.

    pre_t       = W2 relu(W1 *3 [problem; state_t] + b1) + b2
    state_{t+1} = mask * discrete(pre_t)

`*3` is a width-3 convolution (3x3 on a grid; locality: one cell per step), the same weights at
every cell and every step (symmetry). The state is discrete, so "one more step changes nothing" is
an exact test (stability). Two codes for it (`ModelConfig.state`):
- "sign": state_channels channels, each -1 or +1 (sign of pre); a 1x1 readout reads the class,
      logits = V relu(U [problem; state] + c) + d;
- "symbol": the state *is* the cell's readout class, one-hot over `classes` channels (argmax of
      pre); no readout layers. A cell's class is then what its neighbours read, so a rule that
      adds digits can read them linearly. With read_digits the rule reads a class by its digits
      (multiplication's class s + 10 c as s and c): fewer weights, each shared by ten classes.
Both are 0 on padding and before the first step. Training differentiates through the discrete
choice straight-through: tanh's gradient for the sign, softmax's for the symbol.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from sead.runtime.bench import rule_costs

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
    state: str = "sign"  # the state's code (STATE_CODES): "sign" or "symbol" (state_channels == classes)
    # a symbol state: > 1 makes the rule read a neighbour's class k by its digits in this base
    # (k % base, k // base % base, ...), one one-hot per digit, instead of as one of `classes`
    read_digits: int = 0

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        if data.get("version") != MODEL_CONFIG_VERSION:
            raise ValueError(f"model config version {data.get('version')!r}, expected {MODEL_CONFIG_VERSION}")
        config = cls(**data)
        if config.state not in STATE_CODES:
            raise ValueError(f"unknown state code {config.state!r}; known: {sorted(STATE_CODES)}")
        if config.state == "symbol" and config.state_channels != config.classes:
            raise ValueError(f"a symbol state has one channel per class ({config.classes}), not {config.state_channels}")
        if config.read_digits and (config.state != "symbol" or config.read_digits < 2):
            raise ValueError(f"read_digits={config.read_digits}: digits are read from a symbol state, in a base of 2 or more")
        return config


def digit_matrix(classes: int, base: int) -> torch.Tensor:
    """(digits * base, classes) float32: column k holds the one-hots of k's digits in `base`, low first."""
    digits = 1
    while base ** digits < classes:
        digits += 1
    k = torch.arange(classes)
    return torch.cat([F.one_hot(k // base ** d % base, base) for d in range(digits)], 1).T.float()


def hardsign(pre: torch.Tensor) -> torch.Tensor:
    """+1 where pre > 0 else -1; gradient of tanh (straight-through)."""
    hard = torch.where(pre > 0, 1.0, -1.0)
    if not pre.requires_grad:
        return hard
    soft = torch.tanh(pre)
    return soft + (hard - soft).detach()


def hardmax(pre: torch.Tensor) -> torch.Tensor:
    """One-hot of the first largest channel; gradient of softmax (straight-through)."""
    hard = torch.zeros_like(pre).scatter_(1, pre.argmax(1, keepdim=True), 1.0)
    if not pre.requires_grad:
        return hard
    soft = pre.softmax(1)
    return soft + (hard - soft).detach()


class SignState:
    """Each state channel is the sign of its pre-activation."""

    activate = staticmethod(hardsign)

    @staticmethod
    def keep_hinge(pre: torch.Tensor, state: torch.Tensor, margin: float) -> torch.Tensor:
        """(B, C_s, *S): > 0 unless pre reproduces `state` with the margin, channel by channel."""
        return F.relu(margin - pre * state)

    @staticmethod
    def decision_margin(pre: torch.Tensor) -> torch.Tensor:
        """How far each state value is from flipping: |pre| (rounding may flip it below 1e-5)."""
        return pre.abs()

    @staticmethod
    def random(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
        return torch.randint(-1, 2, shape, generator=gen).float()


class SymbolState:
    """The state is a one-hot class: the argmax of the pre-activation."""

    activate = staticmethod(hardmax)

    @staticmethod
    def keep_hinge(pre: torch.Tensor, state: torch.Tensor, margin: float) -> torch.Tensor:
        """(B, 1, *S): > 0 unless the state's class beats every other by the margin."""
        kept = (pre * state).sum(1, keepdim=True)
        rival = (pre - 1e9 * state).amax(1, keepdim=True)
        return F.relu(margin - (kept - rival))

    @staticmethod
    def decision_margin(pre: torch.Tensor) -> torch.Tensor:
        """The gap between the two largest pre-activations, at every channel of the cell."""
        top = pre.topk(2, dim=1).values
        return (top[:, :1] - top[:, 1:]).expand_as(pre)

    @staticmethod
    def random(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
        index = torch.randint(0, shape[1], (shape[0], 1, *shape[2:]), generator=gen)
        return torch.zeros(shape).scatter_(1, index, 1.0)


STATE_CODES = {"sign": SignState, "symbol": SymbolState}


class SEAD(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.code = STATE_CODES[config.state]
        self.linear_hidden = False  # training only (train/coded.py): the hidden layer without its relu
        seen = config.state_channels
        if config.read_digits:  # not a learned weight: a fixed recoding of the state
            self.register_buffer("digits", digit_matrix(config.classes, config.read_digits), persistent=False)
            seen = self.digits.shape[0]
        conv = {1: nn.Conv1d, 2: nn.Conv2d}[config.rank]
        self.rule_in = conv(config.input_channels + seen, config.hidden, 3)
        self.rule_out = conv(config.hidden, config.state_channels, 1)
        if config.state == "sign":  # a symbol state is its own readout
            self.read_in = conv(config.input_channels + config.state_channels, config.readout_hidden, 1)
            self.read_out = conv(config.readout_hidden, config.classes, 1)

    def initial_state(self, problem: torch.Tensor) -> torch.Tensor:
        return problem.new_zeros(problem.shape[0], self.config.state_channels, *problem.shape[2:])

    def pad(self, z: torch.Tensor) -> torch.Tensor:
        if self.config.boundary == "ring":
            return torch.cat([z[:, :, -1:], z, z[:, :, :1]], dim=2)
        return F.pad(z, (1, 1) * self.config.rank)

    def preactivation(self, problem: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """(B, C_in, *S), (B, C_s, *S) -> (B, C_s, *S): the rule before the sign (S: L or H, W)."""
        if self.config.read_digits:
            state = torch.einsum("dk,bk...->bd...", self.digits, state)
        z = self.pad(torch.cat([problem, state], dim=1))
        hidden = self.rule_in(z)
        return self.rule_out(hidden if self.linear_hidden else F.relu(hidden))

    def step_weights(self) -> dict[str, torch.Tensor]:
        """The weights of the step as exported: the first convolution over [problem; state]. With
        read_digits its state part is folded, (hidden, digits, k) x (digits, classes): a linear map
        composed with a linear map, so the step is the same function (export checks it)."""
        weights = {k: v.detach() for k, v in self.state_dict().items()}
        if self.config.read_digits:
            w = weights["rule_in.weight"]
            c = self.config.input_channels
            weights["rule_in.weight"] = torch.cat([w[:, :c], torch.einsum("hd...,dk->hk...", w[:, c:], self.digits)], 1)
        return weights

    def step(self, problem: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """One local update. problem (B, C_in, *S) float32, state (B, C_s, *S) in the state's code."""
        return self.code.activate(self.preactivation(problem, state)) * problem[:, :1]

    def readout(self, problem: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """(B, C_in, *S), (B, C_s, *S) -> logits (B, classes, *S); a symbol state is its own."""
        if self.config.state == "symbol":
            return state
        z = torch.cat([problem, state], dim=1)
        return self.read_out(F.relu(self.read_in(z)))

    def answer_logits(self, problem: torch.Tensor, state: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        """Training: logits whose argmax is the readout of `state`, made by `pre`, with a gradient:
        the readout's on a sign state; on a symbol state, `pre` itself (the state is its argmax)."""
        return pre if self.config.state == "symbol" else self.readout(problem, state)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_cell_update(self) -> int:
        """The cost model's FLOPs (sead.runtime.bench.rule_costs) of the step as exported: with
        read_digits, the folded convolution over all the state channels."""
        c = self.config
        return rule_costs(c.input_channels, c.state_channels, c.hidden, c.rank)["flops_per_cell_update"]


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
    """The PyTorch reference loop (training, evaluation, export's check and the naive `sead bench`
    baseline): iterate until each problem's state stops changing (or its generations run out).

    Returns (symbols (B, *S) int64, steps (B,) int64, converged (B,) bool), and an `Activity` as a
    fourth item when `activity` is set. `steps` counts the updates that changed the state.
    max_steps is the step cap: a problem may take that many changing steps, plus the one that
    changes nothing and so proves its fixed point; one that is still changing after them did not
    converge (steps = max_steps). Tasks that run a given number of generations run exactly
    those whatever max_steps says.
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
