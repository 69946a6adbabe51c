#!/usr/bin/env python3
"""This checkout's runtime against an earlier commit's, on the same problems, interleaved in one run.

    python bench/before_after.py [--base 882732b] [--rounds 7] [--out bench/results/before_after_ort_cpu.json]
    python bench/before_after.py --cases long --base dae5713 --rounds 5 --out bench/results/before_after_long_ort_cpu.json
    python bench/before_after.py --cases short --base feddc05 --rounds 5 --out bench/results/before_after_short_ort_cpu.json

The earlier commit is checked out into a temporary git worktree and imported as `sead` from
there (its runtime needs only numpy, onnx and onnxruntime, as this one does). Each round times
both, one after the other (either first, by turns), in fresh processes: the best and the median of repeated solves per
case. Answers are checked against the task's oracle. The default base is the last commit before tiles.
Both runtimes load the same model files, this checkout's shipped models (`--model` for another
addition model), so only the runtime differs; bench/model_speed.py compares models on one runtime.
Case sets: `addition` (short and long random sums, the default), `long` (tiled tapes and grids:
a carry chain, parity, a Rule 110 ring, products) and `short` (many short problems of the rules
that run blocks of steps: parity strings and Rule 110 rings).
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

from timing import commit_as_sead  # bench/timing.py

ROOT = Path(__file__).resolve().parents[1]
# name: (task, family, size, problems, timed repeats); family "random" (the task's random_line) or "nines"
CASE_SETS = {
    "addition": {"4,096 random 16-digit additions": ("addition", "random", 16, 4096, 15),
                 "one random 1,000,000-digit addition": ("addition", "random", 1_000_000, 1, 5),
                 "one random 100,000-digit addition": ("addition", "random", 100_000, 1, 9),
                 "64 random 1,000-digit additions": ("addition", "random", 1000, 64, 9)},
    "long": {"100,000 nines + 1": ("addition", "nines", 100_000, 1, 3),
             "100,000 random parity bits": ("parity", "random", 100_000, 1, 3),
             "Rule 110, 100,000-cell ring, 100 generations": ("rule110", "random", 100_000, 1, 5),
             "one random 200-digit product": ("multiplication", "random", 200, 1, 3),
             "one random 400-digit product": ("multiplication", "random", 400, 1, 1)},
    "short": {"30,000 random 64-bit parity strings": ("parity", "random", 64, 30_000, 5),
              "2,000 Rule 110 rings of 64 cells, 100 generations": ("rule110", "random", 64, 2000, 5),
              "200 Rule 110 rings of 1,000 cells, 100 generations": ("rule110", "random", 1000, 200, 5)},
}

PROBE = r"""
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[3])  # this checkout's bench/, for timing.py
from timing import time_solves
try:
    from sead.runtime import Runtime          # this checkout
    import sead.runtime.api
except ImportError:
    from sead.runtime.solve import Runtime    # before the public API
from sead.runtime.tasks import get_task
cases, models = json.loads(sys.argv[1]), json.loads(sys.argv[2])
runtimes = {}
out = {}
for name, (task_name, family, size, count, repeats) in cases.items():
    task = get_task(task_name)
    if task_name not in runtimes:
        runtimes[task_name] = Runtime(models[task_name], "ort")
    rng = np.random.default_rng(size)
    if family == "nines":
        lines = ["9" * size + "+1"] * count
    else:
        lines = [task.random_line(rng, size, generations=100) for _ in range(count)]
    times, results = time_solves(runtimes[task_name].solve, lines, repeats)
    exact = sum(r.answer == task.answer(task.parse(x)) for r, x in zip(results, lines))
    out[name] = {"best": min(times), "median": float(np.median(times)), "exact": exact, "problems": count}
print(json.dumps(out))
"""


def measure(package_parent: str | None, cases: dict, models: dict) -> dict:
    env = dict(os.environ)
    if package_parent:
        env["PYTHONPATH"] = package_parent
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(cases), json.dumps(models), str(ROOT / "bench")],
                          capture_output=True, text=True, env=env, cwd=tempfile.gettempdir(), check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="882732b")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", type=Path, default=Path("bench/out/before_after.json"))
    ap.add_argument("--model", type=Path, default=ROOT / "runtime" / "models" / "addition.onnx")
    ap.add_argument("--cases", choices=sorted(CASE_SETS), default="addition")
    args = ap.parse_args()
    cases = CASE_SETS[args.cases]
    models = {task: str(ROOT / "runtime" / "models" / f"{task}.onnx") for task, *_ in cases.values()}
    models["addition"] = str(args.model.resolve())
    with commit_as_sead(args.base) as parent:
        rounds = []
        for i in range(args.rounds):
            sides = {"before": parent, "after": None}
            result = {}
            for side in (("before", "after") if i % 2 == 0 else ("after", "before")):  # either goes first
                print(f"round {i + 1}: {args.base if side == 'before' else 'this checkout'} ...", file=sys.stderr,
                      flush=True)
                result[side] = measure(sides[side], cases, models)
            rounds.append({"before": result["before"], "after": result["after"]})
            print(json.dumps(rounds[-1]), flush=True)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    summary = {}
    for name in cases:
        summary[name] = {side: {"best": [round(r[side][name]["best"], 4) for r in rounds],
                                "median": [round(r[side][name]["median"], 4) for r in rounds],
                                "exact": all(r[side][name]["exact"] == r[side][name]["problems"] for r in rounds)}
                         for side in ("before", "after")}
        per_round = [r["after"][name]["median"] / r["before"][name]["median"] for r in rounds]
        summary[name]["after_over_before"] = {  # > 1: this checkout is slower
            "best_of_rounds": round(min(summary[name]["after"]["best"]) / min(summary[name]["before"]["best"]), 3),
            "median_of_round_medians": round(float(np.median(per_round)), 3)}
    report = {"base": args.base, "head": head, "cases": args.cases, "model": str(args.model.relative_to(ROOT)) if args.model.is_relative_to(ROOT) else str(args.model), "cpus": os.cpu_count(), "rounds": rounds, "summary": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
