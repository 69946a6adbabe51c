#!/usr/bin/env python3
"""The shipped model against an earlier commit's model of the same task, on this runtime, in one run.

    python bench/model_speed.py [--task addition] [--base 882732b] [--rounds 3]
                                [--out bench/results/model_speed_addition_ort_cpu.json]

The earlier model file is read from git (`git show BASE:runtime/models/TASK.onnx`) and loaded by
this checkout's runtime, so only the rule differs. Each round times both models, alternating, on
the same problems: the best of repeated solves per case. Every answer is checked against the
task's oracle. FLOPs per cell update come from each file's convolution weights.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from sead.runtime import Runtime
from sead.runtime.bench import model_costs
from sead.runtime.model_file import default_model_path, load_step_model
from sead.runtime.tasks import get_task
from timing import time_solves  # bench/timing.py

ROOT = Path(__file__).resolve().parents[1]
CASES = [("4,096 random problems of 16", 16, 4096, 9), ("64 random problems of 1,000", 1000, 64, 7),
         ("one random problem of 100,000", 100_000, 1, 7), ("one random problem of 1,000,000", 1_000_000, 1, 3)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="addition")
    ap.add_argument("--base", default="882732b")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("bench/out/model_speed.json"))
    args = ap.parse_args()
    task = get_task(args.task)
    with tempfile.TemporaryDirectory() as tmp:
        old_path = Path(tmp) / f"{args.task}-{args.base}.onnx"
        old_path.write_bytes(subprocess.run(["git", "-C", str(ROOT), "show", f"{args.base}:runtime/models/{args.task}.onnx"],
                                            capture_output=True, check=True).stdout)
        models = {"shipped": str(default_model_path(args.task)), args.base: str(old_path)}
        costs = {name: model_costs(load_step_model(path)) for name, path in models.items()}
        rng = np.random.default_rng(5)
        problems = {label: [task.random_line(rng, task.size_for(size), generations=100) for _ in range(count)]
                    for label, size, count, _ in CASES}
        runtimes = {name: Runtime(path, "ort") for name, path in models.items()}
        rows = {label: {name: [] for name in models} for label, *_ in CASES}
        exact = {}
        for r in range(args.rounds):
            for label, _, count, repeats in CASES:
                for name, rt in runtimes.items():
                    times, results = time_solves(rt.solve, problems[label], repeats)
                    rows[label][name].append(round(min(times), 4))
                    exact.setdefault((label, name), sum(x.answer == task.answer(task.parse(p))
                                                        for x, p in zip(results, problems[label])) == count)
                print(f"round {r + 1} {label}: " + ", ".join(f"{n} {rows[label][n][-1]:.4f} s" for n in models),
                      file=sys.stderr, flush=True)
        for rt in runtimes.values():
            rt.close()
    report = {"task": args.task, "base": args.base, "cpus": os.cpu_count(), "costs": costs,
              "rows": [{"case": label, "seconds": rows[label],
                        "exact": {n: exact[(label, n)] for n in models},
                        "speedup_best": round(min(rows[label][args.base]) / min(rows[label]["shipped"]), 2)}
                       for label, *_ in CASES]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report["rows"], indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
