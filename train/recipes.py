"""The training recipe of each task: the settings the shipped default models were made with."""
from __future__ import annotations

import dataclasses

from .loop import TrainConfig

RECIPES = {
    # hidden 16 (was 64): 2,944 FLOPs per cell update instead of 11,776, exact from 3 of 3 seeds at every
    # length of bench/seeds.py; 4 state channels or a hidden width of 12 or 8 were not (bench/results/sweep_addition.json)
    "addition": TrainConfig(task="addition", steps=2000, lr=3e-3, hidden=16, readout_hidden=64,
                            settle_weight=0.3, hunt_from=0.5),
    # the settle hinge, on from the start, froze parity before it learned; without it, 2 of 3
    # seeds cycled instead of settling on some tapes: it comes on at half way. The activity hinge
    # ramps in from 30% to 50% of training, once parity is learned; at weight 1, one seed kept up to
    # 7 changes per cell; at 3 (1,000 steps), a seed forgot parity (README: parity's recipe)
    "parity": TrainConfig(task="parity", steps=2000, lr=3e-3, hidden=32, readout_hidden=32,
                          settle_weight=0.3, settle_from=0.5, hunt_from=0.5, activity_weight=2.0),
    # unrolls of up to 12 generations: with up to 6 at lr 1e-2, seed 2 drifted after many generations
    "rule110": TrainConfig(task="rule110", steps=2000, lr=5e-3, extra_steps=12),
    # grids of operands of at most 6 digits (the follow-up paper's training range). A symbol state (each
    # cell's state is its class s + 10 c), read by the rule as its digits s and c, and the deadline
    # loss alone: one step per batch, about nine times cheaper than an unroll. Unrolled losses after
    # it lowered short accuracy (0.942 -> 0.883, bench/results/train_multiplication_deadline_seed0.json);
    # sign states with unrolled losses reached 0.37 at best. Then 14,000 steps more at peak lr 1e-3: after the
    # first phase alone, seed 0 was wrong on 2 of 136 products at 24 and 48 digits and seed 1 on 1 of 32 at
    # 100 (bench/results/*first_phase*.json); annealed, both are exact on those and up to 200 digits (README: Grids)
    "multiplication": TrainConfig(task="multiplication", steps=28000, lr=3e-3, max_len=6, hidden=64, state="symbol",
                                  read_digits=10, deadline_weight=1.0, unroll_from=1.0, mine_every=1000,
                                  anneal_steps=14000, anneal_lr=1e-3,
                                  max_minutes=55.0),  # 28,000 + 14,000 steps took about 40 minutes here
}
SHIPPED_SEEDS = {"addition": 0, "parity": 0, "rule110": 0, "multiplication": 1}


def recipe(task: str, seed: int = 0, steps: int | None = None, max_minutes: float | None = None) -> TrainConfig:
    """The task's recipe (its own time limit unless max_minutes); a task without one trains with
    TrainConfig's defaults. steps: the first phase's; an anneal phase keeps its share of them."""
    base = RECIPES.get(task) or TrainConfig(task=task)
    steps = steps or base.steps
    return dataclasses.replace(base, seed=seed, steps=steps, anneal_steps=base.anneal_steps * steps // base.steps,
                               max_minutes=max_minutes or base.max_minutes)
