"""The training recipe of each task: the settings the shipped default models were made with."""
from __future__ import annotations

import dataclasses

from .loop import TrainConfig

RECIPES = {
    # a sign state of 2 channels in a fixed code, the carry into each cell and whether it wraps the
    # cell's digit to 0 (train/codes.py carry_in), hidden width 2, a one-unit readout: 183
    # parameters, 272 FLOPs per cell update. The rule learns the code's automaton on random states
    # (train/coded.py), about 20 s on one core; bench/addition_bound.py checks it on every
    # neighbourhood. Exact from 3 of 3 seeds at every length of bench/seeds.py
    # (bench/results/seeds_addition.json)
    "addition": TrainConfig(task="addition", steps=3000, lr=3e-2, hidden=2, readout_hidden=1, code="carry_in",
                            settle_weight=0.0, polish_rounds=6),
    # the unrolled alternative (not shipped): 8 state channels learned by unrolling (no code), hidden 16, 4,002
    # parameters, 2,944 FLOPs per cell update; exact from 3 of 3 seeds at every length of
    # bench/seeds.py (bench/results/seeds_addition_unrolled.json); 4 state channels or a hidden width
    # of 12 or 8 were not (bench/results/sweep_addition.json)
    "addition_unrolled": TrainConfig(task="addition", steps=2000, lr=3e-3, hidden=16, readout_hidden=64,
                                     settle_weight=0.3, hunt_from=0.5),
    # a sign state of 2 channels in a fixed code, a front that knows the parity of the bits behind
    # it (train/codes.py parity_front), 8 relu units (xor needs them), a one-unit readout. The rule
    # learns the code's automaton on random states (train/coded.py), about a minute on one core;
    # bench/parity_bound.py checks it on every neighbourhood. Exact from 3 of 3 seeds at every
    # length of bench/seeds.py (bench/results/seeds_parity.json)
    "parity": TrainConfig(task="parity", steps=4000, lr=1e-2, hidden=8, readout_hidden=1, code="parity_front",
                          relu_hidden=True, polish_rounds=6, settle_weight=0.0),
    # the unrolled alternative (not shipped): 8 state channels learned by unrolling, hidden 32, 1,802 parameters.
    # The settle hinge comes on half way: on from the start it freezes parity before it is learned,
    # and without it some seeds cycle instead of settling. The activity hinge ramps in from 30% to
    # 50% of training, once parity is learned; weight 2 sits between one that leaves a seed with up
    # to 7 changes per cell (1) and one that makes a seed forget parity (3) (docs/models-and-recipes.md)
    "parity_unrolled": TrainConfig(task="parity", steps=2000, lr=3e-3, hidden=32, readout_hidden=32,
                                   settle_weight=0.3, settle_from=0.5, hunt_from=0.5, activity_weight=2.0),
    # a sign state of 2 channels in a fixed code, whether a generation has set the cell's value and
    # that value (train/codes.py set_value), 16 relu units (8 left seed 0 wrong on 267 of 512 rows
    # in the zero state), a one-unit readout. The rule learns the code's automaton on random states
    # (train/coded.py), about 35 s on one core; bench/rule110_bound.py checks it on every neighbourhood
    "rule110": TrainConfig(task="rule110", steps=3000, lr=1e-2, hidden=16, readout_hidden=1, code="set_value",
                           relu_hidden=True, polish_rounds=6, settle_weight=0.0),
    # the unrolled alternative (not shipped): 8 state channels learned by unrolling, hidden 32, 1,802 parameters;
    # unrolls of up to 12 generations: with up to 6, a seed drifts after many generations
    "rule110_unrolled": TrainConfig(task="rule110", steps=2000, lr=5e-3, extra_steps=12),
    # grids of operands of at most 6 digits (the follow-up paper's training range). A sign state of 13
    # channels in a fixed code of the carry-save array's (s, c) (train/codes.py carry_thermometer),
    # hidden width 3, a one-unit readout: 1,712 parameters. The rule learns the code's automaton on
    # random states (train/coded.py): 13 linear units for a quarter of the steps, pulled towards rank
    # 3, factored to 3 units and trained on at a tenth of the rate, then polished by L-BFGS. Exact at
    # 6 to 48 digits from 3 of 3 seeds (bench/results/train_multiplication_compact_seed*.json; docs/grids.md)
    "multiplication": TrainConfig(task="multiplication", steps=6000, lr=3e-2, max_len=6, hidden=3, readout_hidden=1,
                                  code="carry_thermometer", wide_hidden=13, wide_share=0.25, nuclear_weight=0.3,
                                  narrow_lr=3e-3, polish_rounds=6, max_minutes=30.0),
    # the symbol-state alternative (not shipped): a symbol state (each cell's state is its class s + 10 c, 100 channels),
    # read as its digits s and c; 86,628 parameters, exact to 200 digits, one digit of a 1,000-digit
    # product wrong (bench/results/*first_phase*.json, multiplication_1000_ort_cpu.json). Deadline
    # loss alone, then an anneal phase; about 40 minutes on 2 cores
    "multiplication_symbol": TrainConfig(task="multiplication", steps=28000, lr=3e-3, max_len=6, hidden=64,
                                         state="symbol", read_digits=10, deadline_weight=1.0, unroll_from=1.0,
                                         mine_every=1000, anneal_steps=14000, anneal_lr=1e-3, max_minutes=55.0),
}
SHIPPED_SEEDS = {"addition": 0, "parity": 0, "rule110": 0, "multiplication": 1}


def recipe(task: str, seed: int = 0, steps: int | None = None, max_minutes: float | None = None) -> TrainConfig:
    """The task's recipe (its own time limit unless max_minutes); a task without one trains with
    TrainConfig's defaults. steps: the first phase's; an anneal phase keeps its share of them."""
    base = RECIPES.get(task) or TrainConfig(task=task)
    steps = steps or base.steps
    return dataclasses.replace(base, seed=seed, steps=steps, anneal_steps=base.anneal_steps * steps // base.steps,
                               max_minutes=max_minutes or base.max_minutes)
