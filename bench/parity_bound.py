#!/usr/bin/env python3
"""Is a parity rule in the front code (train/codes.py parity_front) *provably* its automaton? As
bench/addition_bound.py does for addition: every neighbourhood a cell can meet, a real cell and its
two neighbours, each empty or a bit, all in the zero state (before the first step) or all holding
the code's states (unknown: k = p = -1; known: k = +1, p = ±1); then the readout of every bit and
state at rest against [p odd]. Every margin positive and far above float rounding, no float32
decision differing, and the readout right prove the rule the automaton on every state it meets
(by induction from the zero state), so exact at every length: the automaton settles at the
parity of every prefix (tests/test_coded.py checks it against a count of ones). States it never
meets (a zero state beside others, p set on an unknown cell) are counted too, as information.
Writes bench/results/parity_bound.json.

    python bench/parity_bound.py [MODEL.onnx ...] [--out FILE]

(default: the shipped model; the other seeds' rules come from `python bench/seeds.py --tasks parity
--save runs` and `sead export runs/parity_seedN.pt`)
"""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from addition_bound import load, main, met_and_never_met, readout_at_rest, report  # bench/addition_bound.py

STATES = {"zero": [(0, 0)], "coded": [(-1, -1), (1, -1), (1, 1)],
          "any": [(0, 0), *itertools.product((-1, 1), repeat=2)]}


def windows(kind: str) -> tuple:
    """Every window of three cells (each empty, code 0, or a bit, code 1 + b, with a state of
    `kind`) whose middle cell is real, and the automaton's next state of that cell."""
    options = [(0, (0, 0))] + [(code, state) for code in (1, 2) for state in STATES[kind]]
    triples = [t for t in itertools.product(options, repeat=3) if t[1][0] > 0]
    codes = np.array([[c for c, _ in t] for t in triples])
    states = np.array([[s for _, s in t] for t in triples], np.float64)  # (n, 3, 2)
    left_real = codes[:, 0] > 0
    known = ~left_real | (states[:, 0, 0] > 0)
    left_odd = left_real & (states[:, 0, 1] > 0)
    odd = known & (left_odd ^ (codes[:, 1] == 2))
    return codes, states, np.stack([known, odd], 1) * 2.0 - 1, ("known", "odd")


def check(model: Path, never_met: bool = True) -> dict:
    step, rule = load(model, "parity", 3)
    met, others = met_and_never_met(step, rule, windows, ("zero", "coded"), never_met)
    # the readout at rest: a known cell holding its prefix's parity
    bits, odd = np.repeat([0, 1], 2), np.tile([-1.0, 1.0], 2)
    rest = np.stack([np.ones(4), odd], 1)
    return report(model, step, met, readout_at_rest(rule, 1 + bits, rest, (odd > 0).astype(int)), others)


if __name__ == "__main__":
    main("parity", check, __doc__)
