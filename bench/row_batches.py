#!/usr/bin/env python3
"""Batch sizes for short problems on one engine, in one run: which `max_batch_cells` solves fastest.

    python bench/row_batches.py [--engine ort] [--cells 16384,32768,65536,131072] [--rounds 3]
                                [--out bench/results/row_batches_ort_cpu.json]

Each case is a set of short problems of one task, solved by one Runtime per batch size. Rounds
alternate the runtimes on the same problems, so every size meets the same machine; a case's time
is the best of its repeated solves over all rounds, reported as a ratio to the engine's default
size. Every answer is checked against the task's oracle.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import numpy as np

from sead.runtime import Runtime
from sead.runtime.tasks import get_task
from timing import time_solves  # bench/timing.py

# (task, size, problems, generations, repeats)
CASES = [("addition", 16, 100_000, None, 3), ("addition", 100, 10_000, None, 3), ("parity", 64, 30_000, None, 3),
         ("rule110", 64, 2_000, 100, 3), ("multiplication", 8, 1_000, None, 3)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", default="ort")
    ap.add_argument("--cells", default="16384,32768,65536,131072")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    sizes = [int(c) for c in args.cells.split(",")]
    rng = np.random.default_rng(11)
    report = {"engine": args.engine, "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores",
              "python": platform.python_version(), "rounds": args.rounds, "cases": []}
    for task_name, size, count, generations, repeats in CASES:
        task = get_task(task_name)
        lines = [task.random_line(rng, size, generations) for _ in range(count)]
        want = [task.answer(task.parse(line)) for line in lines]
        runtimes = {cells: Runtime(task_name, args.engine, max_batch_cells=cells) for cells in sizes}
        default = next(iter(runtimes.values())).engine.batch_cells
        best = {cells: float("inf") for cells in sizes}
        try:
            for _ in range(args.rounds):
                for cells, rt in runtimes.items():
                    times, results = time_solves(rt.solve, lines, repeats)
                    if [r.answer for r in results] != want:
                        raise SystemExit(f"{task_name}: answers differ from the oracle at max_batch_cells={cells}")
                    best[cells] = min(best[cells], min(times))
        finally:
            for rt in runtimes.values():
                rt.close()
        base = best.get(default) or best[sizes[0]]
        case = {"task": task_name, "size": size, "problems": count, "generations": generations,
                "seconds": {str(c): round(t, 4) for c, t in best.items()},
                "relative_to_default": {str(c): round(t / base, 3) for c, t in best.items()},
                "default_cells": default, "exact": True}
        report["cases"].append(case)
        shown = ", ".join(f"{c}: {t:.3f} s ({t / base:.2f}x)" for c, t in best.items())
        print(f"{task_name} {count:,} x size {size}: {shown}", flush=True)
    report["load_average_at_end"] = os.getloadavg()
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
