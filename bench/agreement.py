#!/usr/bin/env python3
"""The runtime against the PyTorch reference loop of the same shipped model: the same answers,
the same step counts and the same converged flags, at lengths 1 to 100,000 (parity to 10,000:
it needs about L steps, so 100,000 bits is 10^10 cell-updates per problem for the reference)
and one 1,000,000-digit addition; answers are also checked against the exact oracles.

    python bench/agreement.py [--engine ort] [--out bench/out/agreement.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from sead.runtime.model_file import default_model_path
from sead.runtime import Runtime
from sead.runtime.tasks.base import default_step_cap
from sead.runtime.tasks import get_task
from sead.train.checkpoint import load_checkpoint
from sead.train.data import encode_batch
from sead.train.model import solve

PLAN = {  # task: [(tape cells, problems)]
    "addition": [(2, 32), (3, 32), (17, 64), (101, 32), (1001, 8), (10_001, 4), (100_001, 2), (1_000_001, 1)],
    "parity": [(1, 32), (2, 32), (16, 64), (100, 32), (1000, 8), (10_000, 2)],
    "rule110": [(1, 16), (2, 16), (16, 64), (100, 32), (1000, 8), (10_000, 2), (100_000, 1)],
}


def lines_for(task_name: str, cells: int, count: int, rng) -> list[str]:
    task = get_task(task_name)
    return [task.random_line(rng, task.size_for(cells), generations=int(rng.integers(0, 200))) for _ in range(count)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", default="ort")
    ap.add_argument("--out", type=Path, default=Path("bench/out/agreement.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    rng = np.random.default_rng(31)
    report, failures = [], 0
    for task_name, plan in PLAN.items():
        task = get_task(task_name)
        runtime = Runtime(task_name, args.engine)
        model, _ = load_checkpoint(default_model_path(task_name, ".pt"))
        for cells, count in plan:
            lines = lines_for(task_name, cells, count, rng)
            start = time.time()
            got = runtime.solve(lines)
            engine_s = time.time() - start
            want = []
            for line in lines:  # the reference, one problem at a time, unpadded
                p = task.parse(line)
                x, _, gens = encode_batch(task_name, [p])
                symbols, steps, conv = solve(model, x, default_step_cap(p.length), gens)
                want.append((task.decode(symbols[0].numpy(), p) if conv[0] else None, int(steps[0]), bool(conv[0])))
            same = [(r.answer, r.steps, r.converged) for r in got] == want
            exact = sum(r.converged and r.answer == task.answer(task.parse(line)) for r, line in zip(got, lines))
            failures += (not same) + (exact != len(lines))
            row = {"task": task_name, "cells": cells, "problems": count, "same_as_pytorch": same, "exact": exact,
                   "steps_max": max(r.steps for r in got), "engine_seconds": round(engine_s, 3),
                   "reference_seconds": round(time.time() - start - engine_s, 3)}
            report.append(row)
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print("runtime == PyTorch reference and oracle everywhere" if not failures else f"{failures} rows differ")
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
