#!/usr/bin/env python3
"""Is a Rule 110 rule in the set-value code (train/codes.py set_value) *provably* its automaton? As
bench/addition_bound.py does for addition: every neighbourhood a cell can meet, a cell and its two
neighbours on a ring (every cell real; a ring of one or two cells is its own neighbour), each a
bit, all in the zero state (before the first step) or all set (f = +1, v = ±1): the cells of a
ring start together and step together. Then the readout of every bit in either state. Every margin
positive and far above float rounding, no float32 decision differing, and the readout right prove
the rule the automaton on every state it meets (by induction from the zero state), so exact on
every ring for any number of generations: the automaton is Rule 110 (tests/test_coded.py checks it
against direct simulation). States it never meets (f = -1, a zero state beside set ones) are
counted too, as information.
Writes bench/results/rule110_bound.json.

    python bench/rule110_bound.py [MODEL.onnx ...] [--out FILE]

(default: the shipped model; the other seeds' rules come from `python bench/seeds.py --tasks rule110
--save runs` and `sead export runs/rule110_seedN.pt`)
"""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from addition_bound import load, main, met_and_never_met, readout_at_rest, report  # bench/addition_bound.py

STATES = {"zero": [(0, 0)], "set": [(1, -1), (1, 1)], "any": list(itertools.product((-1, 0, 1), repeat=2))}


def windows(kind: str) -> tuple:
    """Every window of three bits (code 1 + b) with states of `kind`, and the automaton's next state
    of its middle cell: f = +1, v = Rule 110 of the three values (a bit while f <= 0, [v > 0] after)."""
    options = [(code, state) for code in (1, 2) for state in STATES[kind]]
    triples = list(itertools.product(options, repeat=3))
    codes = np.array([[c for c, _ in t] for t in triples])
    states = np.array([[s for _, s in t] for t in triples], np.float64)  # (n, 3, 2)
    value = np.where(states[:, :, 0] > 0, states[:, :, 1] > 0, codes == 2).astype(int)
    new = (110 >> (4 * value[:, 0] + 2 * value[:, 1] + value[:, 2])) & 1
    return codes, states, np.stack([np.ones(len(new)), new * 2.0 - 1], 1), ("set", "value")


def check(model: Path, never_met: bool = True) -> dict:
    step, rule = load(model, "rule110", 3)
    met, others = met_and_never_met(step, rule, windows, ("zero", "set"), never_met)
    # the readout: a bit in the zero state reads as itself; a set cell as its value
    bits = np.tile([0, 1], 3)
    rest = np.repeat([(0.0, 0.0), (1.0, -1.0), (1.0, 1.0)], 2, axis=0)
    want = np.where(rest[:, 0] > 0, rest[:, 1] > 0, bits == 1).astype(int)
    return report(model, step, met, readout_at_rest(rule, 1 + bits, rest, want), others)


if __name__ == "__main__":
    main("rule110", check, __doc__)
