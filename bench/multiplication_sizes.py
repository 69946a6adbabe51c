#!/usr/bin/env python3
"""How far the shipped multiplication rule stays exact, through the runtime (no torch).

    python bench/multiplication_sizes.py [--sizes 12,24,48,100,200] [--problems 16,16,8,8,2]
                                         [--families random,unequal,all_nines,powers_of_ten,zeros]
                                         [--model multiplication] [--engine ort]
                                         [--out bench/results/multiplication_sizes_ort_cpu.json]

Products of each family (the task's held-out families; random: both operands of the given
number of digits) run through `Runtime` with
allow_unverified_sizes, since the shipped rule refuses sizes past its sead.verified_size, and
are checked against Python's exact decimal arithmetic (the task's oracle). Per size: exact,
settled (a fixed point within the step cap), the steps, and the wall time on this machine.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from sead.runtime import Runtime
from sead.runtime.tasks import get_task


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="multiplication")
    ap.add_argument("--engine", default="ort")
    ap.add_argument("--sizes", default="12,24,48,100,200")
    ap.add_argument("--problems", default="16,16,8,8,2")
    ap.add_argument("--families", default="random", help="comma-separated: the task's families (sead eval)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("bench/results/multiplication_sizes_ort_cpu.json"))
    args = ap.parse_args()
    sizes = [int(v) for v in args.sizes.split(",")]
    counts = [int(v) for v in args.problems.split(",")]
    if len(sizes) != len(counts):
        ap.error("--sizes and --problems need as many entries")
    task = get_task("multiplication")
    rng = np.random.default_rng(args.seed)
    rows = []
    with Runtime(args.model, args.engine, allow_unverified_sizes=True) as rt:
        for (size, count), family in ((sc, f) for sc in zip(sizes, counts) for f in args.families.split(",")):
            lines = task.family_lines(family, size, count, rng)
            start = time.perf_counter()
            results = rt.solve(lines)
            seconds = time.perf_counter() - start
            exact = sum(r.converged and r.answer == task.answer(task.parse(line)) for line, r in zip(lines, results))
            row = {"family": family, "digits": size, "problems": len(lines), "exact": exact, "settled": sum(r.converged for r in results),
                   "steps_mean": round(float(np.mean([r.steps for r in results])), 1),
                   "steps_max": max(r.steps for r in results), "seconds": round(seconds, 2),
                   "beyond_verified_size": size > rt.metadata.verified_size > 0}
            rows.append(row)
            print(json.dumps(row), flush=True)
        verified = rt.metadata.verified_size
    report = {"command": "python bench/multiplication_sizes.py --model %s --sizes %s --problems %s --families %s "
                         "--engine %s --seed %d" % (args.model, args.sizes, args.problems, args.families, args.engine, args.seed),
              "model": args.model, "engine": args.engine, "verified_size": verified,
              "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}", "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
