#!/usr/bin/env python3
"""Is an addition rule in the carry code (train/codes.py carry_in) *provably* its automaton? Every
neighbourhood a cell can meet, checked: a real cell and its two neighbours, each empty or one of
the 19 column sums, all in the zero state (before the first step) or all holding the code's bits
of some carry c, with z = [s = 9 and c] (after it: the automaton writes z so); a cell with no left
neighbour is a problem's first, which holds the final carry, so its sum is 0 (a tile window's
first cells are halo, whose states the loop never keeps). If the rule is the automaton on these,
by induction every state it reaches is of these kinds, so it is the automaton on every state it
meets. For each, the exported step's next state of the middle cell
against the automaton's, in float64 from the file's weights (the worst margin, pre-activation x
target) and in float32 through ONNX Runtime (decisions that differ); then the readout of every
column sum and carry at rest against (s + c) mod 10. A rule with every margin positive and far
above float rounding is exact at every length: the automaton settles at the sum's digits
(train/codes.py), which tests/test_coded.py checks against Python's integers. States it never
meets (a zero state beside bits; z set where s is not 9; a first cell with a nonzero sum) are
counted too, as information.
Writes bench/results/addition_bound.json.

    python bench/addition_bound.py [MODEL.onnx ...] [--out FILE]

(default: the shipped model; the other seeds' rules come from `python bench/seeds.py --tasks
addition --save runs` and `sead export runs/addition_seedN.pt`)
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from sead.runtime.model_file import default_model_path, load_step_model
from sead.runtime.rule import Rule

SUMS = 19  # a cell's column sum a_i + b_i, 0..18; its code is 1 + s


def cells(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """The states a cell can hold -> (m,) codes (0 empty, 1 + s) and (m, 2) states. kind "zero":
    before the first step (every state 0); "coded": a carry c = ±1 and z = [s = 9 and c]; "any":
    ±1 or 0 in each channel as it comes (an empty cell's state is always 0)."""
    codes, states = [0], [(0, 0)]
    for code in range(1, SUMS + 1):
        if kind == "zero":
            choices = [(0, 0)]
        elif kind == "coded":
            choices = [(c, 1 if c > 0 and code - 1 == 9 else -1) for c in (-1, 1)]
        else:
            choices = [(0, 0), *itertools.product((-1, 1), repeat=2)]
        for state in choices:
            codes.append(code)
            states.append(state)
    return np.array(codes), np.array(states, np.float64)


def automaton(own: np.ndarray, right: np.ndarray, right_carry: np.ndarray) -> np.ndarray:
    """(n, 2) ±1: the carry_in code's next bits of a real cell with code `own` whose right
    neighbour has code `right` (0: empty, which carries nothing) and carry bit `right_carry`."""
    s_right = np.where(right > 0, right - 1, 0)
    carry = s_right + (right_carry > 0) >= 10
    wraps = carry & (own - 1 == 9)
    return np.stack([carry, wraps], 1) * 2.0 - 1


def step_inputs(rule: Rule, codes: np.ndarray, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3) codes and (n, 3, 2) states -> the exported step's problem (n, C_in, 3) and state (n, 2, 3)."""
    problem = np.zeros((len(codes), rule.input_channels, 3), np.float64)
    rows, taps = np.nonzero(codes > 0)
    problem[rows, 0, taps] = 1.0
    problem[rows, codes[rows, taps], taps] = 1.0
    return problem, states.transpose(0, 2, 1)


def neighbourhoods(kinds: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3) codes and (n, 3, 2) states: every window of three cells of one kind (cells), its
    middle cell real (an empty cell's state stays 0 whatever the rule)."""
    all_codes, all_states = [], []
    for kind in kinds:
        one_codes, one_states = cells(kind)
        index = np.array(list(itertools.product(range(len(one_codes)), repeat=3)))
        index = index[one_codes[index[:, 1]] > 0]
        if kind != "any":  # a middle cell with an empty left is a problem's first cell: its sum is 0
            index = index[(one_codes[index[:, 0]] > 0) | (one_codes[index[:, 1]] == 1)]
        all_codes.append(one_codes[index])
        all_states.append(one_states[index])
    return np.concatenate(all_codes), np.concatenate(all_states)


def decisions(step, rule: Rule, codes: np.ndarray, states: np.ndarray, target: np.ndarray, bits: tuple) -> dict:
    """The rule's next state of each window's middle cell against the automaton's, target (n, C_s)
    ±1; bits: each state channel's name. (bench/parity_bound.py uses it too.)"""
    problem, state = step_inputs(rule, codes, states)
    # float64 from the file's weights: the margin of every decision
    x = np.concatenate([problem, state], 1)  # (n, C, 3): the middle cell's window
    hidden = np.maximum(np.einsum("hct,nct->nh", rule.w_in.astype(np.float64), x) + rule.b_in, 0.0)
    pre = hidden @ rule.w_out.astype(np.float64).T + rule.b_out
    margins = pre * target
    # float32 through ONNX Runtime: the file as the runtime's engines load it
    import onnxruntime
    session = onnxruntime.InferenceSession(step.proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    differ = 0
    for start in range(0, len(codes), 1 << 16):
        part = slice(start, start + (1 << 16))
        out = session.run(None, dict(zip(names, (problem[part].astype(np.float32), state[part].astype(np.float32)))))
        differ += int((out[0][:, :, 1] != target[part]).any(1).sum())
    return {"neighbourhoods": len(codes),
            "worst_margin": {name: round(float(margins[:, c].min()), 6) for c, name in enumerate(bits)},
            "decisions_differing_float64": int((margins <= 0).any(1).sum()),
            "decisions_differing_float32_onnxruntime": differ}


def windows(kinds: list[str]) -> tuple:
    """neighbourhoods(kinds) with the automaton's next bits of each middle cell: decisions' arguments."""
    codes, states = neighbourhoods(kinds)
    return codes, states, automaton(codes[:, 1], codes[:, 2], states[:, 2, 0]), ("carry", "wraps")


def check(model: Path, never_met: bool = True) -> dict:
    """The report for one model file; never_met: also every state it never meets (875,520 windows)."""
    step, rule = load(model, "addition", 1 + SUMS)
    met = decisions(step, rule, *windows(["zero", "coded"]))
    others = decisions(step, rule, *windows(["any"])) if never_met else None
    # the readout at rest: a column sum s with carry c in, z = [s = 9 and c]
    s = np.repeat(np.arange(SUMS), 2)
    c = np.tile([-1.0, 1.0], SUMS)
    rest = np.stack([c, np.where((s == 9) & (c > 0), 1.0, -1.0)], 1)
    return report(model, step, met, readout_at_rest(rule, 1 + s, rest, (s + (c > 0)) % 10), others)


def load(model: Path, task: str, input_channels: int):
    """-> (step, rule) of a TASK rule with a 2-channel state, or exit saying what the file is not."""
    step = load_step_model(model)
    rule = Rule.from_step(step)
    if (step.metadata.task, rule.state_channels, rule.input_channels) != (task, 2, input_channels):
        raise SystemExit(f"{model}: not a {task} rule with a 2-channel state")
    return step, rule


def met_and_never_met(step, rule: Rule, windows, kinds: tuple[str, ...], never_met: bool) -> tuple[dict, dict | None]:
    """decisions() over the windows of the kinds a cell meets, together, and over windows("any")
    (None unless never_met). windows(kind) -> (codes, states, target, bit names)."""
    parts = [windows(kind) for kind in kinds]
    met = decisions(step, rule, *(np.concatenate(arrays) for arrays in zip(*(p[:3] for p in parts))), parts[0][3])
    return met, decisions(step, rule, *windows("any")) if never_met else None


def readout_at_rest(rule: Rule, codes: np.ndarray, states: np.ndarray, want: np.ndarray) -> dict:
    """The readout's class of cells (m,) codes with (m, C_s) states at rest against want (m,)."""
    z = np.zeros((len(codes), rule.input_channels))
    z[:, 0] = 1.0
    z[np.arange(len(codes)), codes] = 1.0
    z = np.concatenate([z, states], 1)
    logits = np.maximum(z @ rule.read_in.astype(np.float64).T + rule.read_in_bias, 0.0) @ rule.read_out.T.astype(np.float64) \
        + rule.read_out_bias
    ordered = np.sort(logits, 1)
    return {"cells_at_rest": len(codes), "wrong": int((logits.argmax(1) != want).sum()),
            "smallest_logit_gap": round(float((ordered[:, -1] - ordered[:, -2]).min()), 6)}


def report(model: Path, step, met: dict, readout: dict, others: dict | None) -> dict:
    """One model's row: exact at every length when every met decision has a margin above rounding,
    none differs in float32, and the readout is right at rest with a gap above rounding."""
    exact = min(met["worst_margin"].values()) > 1e-3 and met["decisions_differing_float32_onnxruntime"] == 0 \
        and readout["wrong"] == 0 and readout["smallest_logit_gap"] > 1e-3
    return {"model": str(model), "parameters": step.metadata.parameters, "met": met, "readout": readout,
            "exact_at_every_length": bool(exact), "every_state_including_never_met": others}


def main(task: str = "addition", check=check, doc: str = __doc__) -> None:
    """The command line of this script and of bench/parity_bound.py: check each model, print a line
    each, write bench/results/TASK_bound.json."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("models", nargs="*", type=Path, default=[default_model_path(task)])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / f"{task}_bound.json")
    args = ap.parse_args()
    rows = [check(m) for m in args.models]
    for row in rows:
        met = row["met"]
        print(f"{row['model']}: {met['neighbourhoods']:,} neighbourhoods, worst margins {met['worst_margin']}, "
              f"{met['decisions_differing_float32_onnxruntime']} decisions differ in float32; readout wrong on "
              f"{row['readout']['wrong']} of {row['readout']['cells_at_rest']}; exact at every length: {row['exact_at_every_length']}")
    out = {"command": f"python bench/{task}_bound.py " + " ".join(str(m) for m in args.models), "models": rows}
    args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
