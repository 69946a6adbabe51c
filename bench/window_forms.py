#!/usr/bin/env python3
"""A long tape's tile window in each form of the rule: microseconds a step, and the same states.

    python bench/window_forms.py [--k 64] [--out bench/results/window_forms_ort_cpu.json]

A carry chain's or a parity front's window is about a thousand cells and runs thousands of calls,
so a step's cost is its operators' launch costs more than their arithmetic. Each shipped tape
model's window (one row: 3 tiles and 2 halos of K cells, ending in an empty cell) runs K steps in:

  cl        the channels-last form (`ort-cuda`'s windows)
  cf        the channels-first form, unfused (what `ort-cuda` runs with window_layout cf)
  cf_fused  cf with the first layer as ONNX Runtime's FusedConv (what `ort` runs)
  lookup    the whole step as one table lookup (Rule.step_table; what `ort` runs for rules whose
            table is small): a cell's next state depends only on its (left, own, right) problem
            codes and state values, so a table of every such neighbourhood replaces the
            arithmetic (graph.lookup_advance): a convolution, a cast and a GatherElements, 3
            operators a step against cl's 7 and cf's 6 (cf_fused 4).
  classes   class-coded blocks (runtime/class_blocks.py; what either engine runs with
            window_layout "classes"): a block of up to 7 (addition) or 9 (parity) steps is one
            lookup from a state of a few channels, 4 operators a block.
  classes_conv  the same with the index convolution writing every channel's index, no Expand:
            3 operators a block (a bigger convolution; the runtime runs `classes`).

Every form's states after K steps must equal cl's on every real cell ("same_as_cl"). On a GPU
machine bench/gpu_check.py runs the same on the CUDA provider (section "windows").
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from sead.runtime import graph as G
from sead.runtime.class_blocks import ClassTables
from sead.runtime.engines.ort import CPU_OPTIMIZATION
from sead.runtime.layout import neighbour_table
from sead.runtime.model_file import load_step_model
from sead.runtime.rule import Rule
from sead.runtime.tasks import Problems, get_task

def window_codes(task_name: str, cells: int) -> np.ndarray:
    """(1, cells) uint8: the first cells of a long problem of the task, then one empty cell."""
    task, rng = get_task(task_name), np.random.default_rng(7)
    line = {"addition": "9" * (2 * cells) + "+1"}.get(task_name) or task.random_line(rng, 2 * cells, 10)
    p = task.parse(line)
    codes = task.codes(Problems.from_parsed(task, [p]), np.zeros(1, np.int64), tuple(task.shape(p)))[:, : cells - 1]
    return np.concatenate([codes, np.zeros((1, 1), np.uint8)], axis=1)


def session(model, providers: list):
    """An ONNX Runtime session of a graph, at the level `ort` runs its graphs on the CPU."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if providers == ["CPUExecutionProvider"]:  # as `ort` runs its graphs
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, CPU_OPTIMIZATION)
    return ort.InferenceSession(model.SerializeToString(), opts, providers=providers)


def us_per_step(run, k: int, repeats: int) -> float:
    """Microseconds a step of a call of K steps: the best of `repeats` after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times) / k * 1e6


def forms(rule: Rule, codes: np.ndarray, k: int, providers: list, repeats: int) -> dict:
    """Each form on one window row from its first step: us a step (best of `repeats` calls of K
    steps, inputs and outputs in host memory) and whether its states equal cl's."""
    out, states = {}, {}
    table = np.ascontiguousarray(neighbour_table((codes.shape[1],), False))
    prep = session(G.cl_prepare(rule, True), providers)
    feeds = dict(zip([o.name for o in prep.get_outputs()], prep.run(None, {"codes": codes, "neighbours": table})))
    feeds["neighbours"] = table
    adv = session(G.cl_advance(rule, k, "hot"), providers)
    feeds = {i.name: feeds[i.name] for i in adv.get_inputs()}
    out["cl"] = {"us_per_step": us_per_step(lambda: adv.run(None, feeds), k, repeats)}
    state = adv.run(["state_out"], feeds)[0]
    states["cl"] = session(G.cl_finish(rule, readout=False), providers).run(None, {"codes": codes, "state": state})[0]
    # the channels-first forms: prepare from the codes, K steps timed, finish to state codes
    tables = G.lookup_tables(rule)
    classes = ClassTables(tables) if tables is not None else None
    channels_first = {
        "cf": lambda: (G.cf_prepare(rule, False, True), G.cf_advance(rule, k, False, "hot"),
                       G.cf_finish(rule, False, readout=False), {}),
        "cf_fused": lambda: (G.cf_prepare(rule, False, True), G.cf_advance(rule, k, False, "hot", fused=True),
                             G.cf_finish(rule, False, readout=False), {}),
        "lookup": lambda: (G.lookup_prepare(tables, True, True), G.lookup_advance(tables, k, True, "hot"),
                           G.lookup_finish(tables, True, readout=False), tables.inputs),
        "classes": lambda: (G.classes_prepare(tables, classes, True), G.classes_advance(classes, k),
                            G.classes_finish(tables, classes, readout=False), classes.inputs),
        "classes_conv": lambda: (G.classes_prepare(tables, classes, True), G.classes_advance(classes, k, expand=False),
                                 G.classes_finish(tables, classes, readout=False), classes.inputs),
    }
    for name, build in channels_first.items():
        try:  # FusedConv may be missing from a provider; a rule may have no step table
            prepare, advance, finish, extra = build()
            prep = session(prepare, providers)
            feeds = dict(zip([o.name for o in prep.get_outputs()], prep.run(None, {"codes": codes})), **extra)
            adv = session(advance, providers)
            feeds = {i.name: feeds[i.name] for i in adv.get_inputs()}
            out[name] = {"us_per_step": us_per_step(lambda: adv.run(None, feeds), k, repeats)}
            state = adv.run(["state_out"], feeds)[0]
            states[name] = session(finish, providers).run(None, {"codes": codes, "state": state})[0]
        except Exception as exc:
            out[name] = {"failed": f"{type(exc).__name__}: {exc}"}
    real = codes > 0
    for name, s in states.items():
        out[name]["same_as_cl"] = bool(np.array_equal(s[real], states["cl"][real]))
        out[name]["us_per_step"] = round(out[name]["us_per_step"], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--k", type=int, default=64, help="steps per call (a tile is this many cells)")
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    cells = 5 * args.k + 1  # 3 tiles of k cells, a halo of k on each side, one empty cell
    report = {"machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores", "k": args.k,
              "window_cells": cells, "provider": "CPUExecutionProvider", "models": {}}
    for name in ("addition", "parity", "rule110"):
        rule = Rule.from_step(load_step_model(name))
        got = forms(rule, window_codes(name, cells), args.k, ["CPUExecutionProvider"], args.repeats)
        report["models"][name] = got
        print(name, json.dumps(got), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
