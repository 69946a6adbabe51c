#!/usr/bin/env python3
"""Tiled, activity-aware execution against the dense loop, in the same run (issue #10's targets).

    python bench/tiles.py [--engine ort] [--quick] [--out bench/results/tiles_ort_cpu.json]
    python bench/tiles.py --sweep --out bench/results/tiles_sweep_ort_cpu.json
    python bench/tiles.py --dense-first --out bench/results/dense_first_ort_cpu.json

Each case solves the same problems with the runtime's defaults (tiles) and, where it finishes in
reasonable time, with the dense loop (tile_from=infinity: every cell of a tape runs every step;
the runtime still tiles rows past half an engine row, so 10^6-cell rows are tiled in both). Answers are checked against exact oracles (Python ints and the stdlib's exact
decimal, direct Rule 110 simulation), and tiled steps against dense steps. "cell-steps" counts
what the engine ran for tiled tapes, halos included; "dense cell-steps" is tape length x steps.
The 10,000,000-digit case runs `sead run` in a subprocess under /usr/bin/time -v for its peak
resident memory. Times are wall clock on this machine; compare ratios within one run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sead.runtime import Runtime
from sead.runtime.tasks import get_task

DENSE = 10**12
# solved once before timing: each reaches K = 64, so every K's session exists before the clock starts
WARM_UP = {"addition": ["9" * 600 + "+1", "9" * 6000 + "+1"], "parity": ["1" * 600, "1" * 6000],
           "rule110": ["01" * 300 + " 300", "01" * 3000 + " 300"]}


def digits(rng, n: int) -> str:
    return (rng.integers(0, 10, n).astype(np.uint8) + 48).tobytes().decode()


def solve(rt: Runtime, lines: list[str], repeats: int = 1) -> tuple[list, float, int]:
    """-> (results, the best time of `repeats` solves, the engine's tile cell-steps of one solve)."""
    times = []
    for _ in range(repeats):
        before = rt.stats()["tile_cell_steps"]
        start = time.perf_counter()
        results = rt.solve(lines)
        times.append(time.perf_counter() - start)
    return results, min(times), rt.stats()["tile_cell_steps"] - before


def case(name: str, task_name: str, lines: list[str], engine: str, dense: bool, target: str = "",
         repeats: int = 1) -> dict:
    """One case, tiled and (if `dense`) dense; cases under a second are timed as the best of `repeats`."""
    task = get_task(task_name)
    row = {"case": name, "task": task_name, "problems": len(lines), "cells": sum(task.parse(x).length for x in lines),
           "target": target}
    print(f"{name}: tiled ...", file=sys.stderr, flush=True)
    with Runtime(task_name, engine) as rt:
        rt.solve(WARM_UP[task_name])
        tiled, seconds, cell_steps = solve(rt, lines, repeats)
    exact = sum(r.converged and r.answer == task.answer(task.parse(x)) for r, x in zip(tiled, lines))
    dense_cell_steps = sum(task.parse(x).length * r.steps for x, r in zip(lines, tiled))
    row["tiled"] = {"seconds": round(seconds, 3), "steps": [r.steps for r in tiled][:8], "exact": exact,
                    "cell_steps": cell_steps, "dense_cell_steps": dense_cell_steps,
                    "work_saved": round(dense_cell_steps / cell_steps, 1) if cell_steps else None}
    if dense:
        print(f"{name}: dense ...", file=sys.stderr, flush=True)
        with Runtime(task_name, engine, tile_from=DENSE) as rt:
            rt.solve(WARM_UP[task_name])
            plain, seconds, _ = solve(rt, lines, repeats)
        row["dense"] = {"seconds": round(seconds, 3)}
        row["same_as_dense"] = [(r.answer, r.steps, r.converged) for r in tiled] == \
            [(r.answer, r.steps, r.converged) for r in plain]
        row["speedup"] = round(row["dense"]["seconds"] / row["tiled"]["seconds"], 2)
    print(json.dumps(row), flush=True)
    return row


def threshold_sweep(engine: str, lengths: list[int], seconds: float = 1.0) -> list[dict]:
    """Where tiles start to pay: the same problems as whole rows (dense) and in tiles from the first
    step (dense_first=0), per length, for a few-step task (random additions) and a many-step one
    (random parity strings)."""
    rng = np.random.default_rng(3)
    add, par = get_task("addition"), get_task("parity")
    rows = []
    tiles = dict(tile_from=1, dense_first=0)
    with Runtime("addition", engine, **tiles) as tiled_add, Runtime("addition", engine, tile_from=DENSE) as dense_add, \
            Runtime("parity", engine, **tiles) as tiled_par, Runtime("parity", engine, tile_from=DENSE) as dense_par:
        for rt in (tiled_add, dense_add, tiled_par, dense_par):
            rt.solve(WARM_UP[rt.task.name])
        for n in lengths:
            cases = (("addition", [add.random_line(rng, n - 1) for _ in range(max(2, 65536 // n))], tiled_add, dense_add),
                     ("parity", [par.random_line(rng, n) for _ in range(2)], tiled_par, dense_par))
            for task_name, lines, tiled, dense in cases:
                timing = {}
                for label, rt in (("tiled", tiled), ("dense", dense)):
                    runs, start = 0, time.perf_counter()
                    while runs == 0 or time.perf_counter() - start < seconds:
                        results = rt.solve(lines)
                        runs += 1
                    timing[label] = (time.perf_counter() - start) / runs
                    timing[label + "_results"] = [(r.answer, r.steps) for r in results]
                row = {"task": task_name, "length": n, "problems": len(lines),
                       "tiled_seconds": round(timing["tiled"], 4), "dense_seconds": round(timing["dense"], 4),
                       "dense_over_tiled": round(timing["dense"] / timing["tiled"], 2),
                       "same": timing["tiled_results"] == timing["dense_results"]}
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def dense_first_cases(engine: str, quick: bool, seconds: float = 1.0) -> list[dict]:
    """The runtime as it ships (a long problem's first DENSE_FIRST steps as a whole row, if it fits
    a batch) against tiles from the first step (dense_first=0), on the same problems."""
    rng = np.random.default_rng(5)
    add, par = get_task("addition"), get_task("parity")
    n = 1000 if quick else 3000
    cases = [(f"64 random {n:,}-digit additions", "addition", [add.random_line(rng, n) for _ in range(64)]),
             (f"8 random {10 * n:,}-digit additions", "addition", [add.random_line(rng, 10 * n) for _ in range(8)]),
             (f"6 random {n:,}-digit additions and {n:,} nines + 1", "addition",
              [add.random_line(rng, n) for _ in range(6)] + [f"{'9' * n}+1"]),
             (f"99...9+1, {20 * n // 3:,} nines", "addition", [f"{'9' * (20 * n // 3)}+1"]),
             (f"parity, {20 * n // 3:,} random bits", "parity", [par.random_line(rng, 20 * n // 3)])]
    rows = []
    for name, task_name, lines in cases:
        task = get_task(task_name)
        timing = {}
        with Runtime(task_name, engine) as shipped, Runtime(task_name, engine, dense_first=0) as tiles:
            for label, rt in (("shipped", shipped), ("tiles_first", tiles)):
                rt.solve(WARM_UP[task_name])
                best, start = float("inf"), time.perf_counter()
                while best == float("inf") or time.perf_counter() - start < seconds:
                    before = rt.stats()["tile_cell_steps"]
                    t = time.perf_counter()
                    results = rt.solve(lines)
                    best = min(best, time.perf_counter() - t)
                timing[label] = {"seconds": round(best, 4), "tile_cell_steps": rt.stats()["tile_cell_steps"] - before,
                                 "exact": sum(r.converged and r.answer == task.answer(task.parse(x))
                                              for r, x in zip(results, lines))}
                timing[label + "_results"] = [(r.answer, r.steps) for r in results]
        row = {"case": name, "task": task_name, "problems": len(lines),
               "shipped": timing["shipped"], "tiles_first": timing["tiles_first"],
               "same": timing["shipped_results"] == timing["tiles_first_results"],
               "speedup": round(timing["tiles_first"]["seconds"] / timing["shipped"]["seconds"], 2)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def memory_case(n: int, engine: str) -> dict:
    """`sead run` on one random n-digit addition, under /usr/bin/time -v: time, peak RSS, exactness."""
    import decimal

    rng = np.random.default_rng(n)
    a, b = digits(rng, n), digits(rng, n)
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in.txt", Path(tmp) / "out.txt"
        src.write_text(f"{a}+{b}\n")
        print(f"{n:,}-digit addition through sead run ...", file=sys.stderr, flush=True)
        proc = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "sead.cli", "run", "--engine", engine,
                               "-i", str(src), "-o", str(out)], capture_output=True, text=True)
        rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
        wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", proc.stderr).group(1)
        got = out.read_text().strip() if proc.returncode == 0 else None
    ctx = decimal.Context(prec=n + 2, Emax=decimal.MAX_EMAX, traps=[decimal.Inexact, decimal.Rounded])
    want = str(ctx.add(decimal.Decimal(a), decimal.Decimal(b)))
    row = {"case": f"random {n:,}-digit addition (sead run)", "task": "addition", "problems": 1, "cells": n + 1,
           "target": "exact, peak RSS <= 1 GB", "exit_status": proc.returncode, "exact": got == want,
           "peak_rss_mb": round(rss_kb / 1024, 1), "wall": wall}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", default="ort")
    ap.add_argument("--quick", action="store_true", help="small sizes only (a check of the script)")
    ap.add_argument("--out", type=Path, default=Path("bench/out/tiles.json"))
    ap.add_argument("--sweep", action="store_true", help="only the dense-or-tiled threshold sweep")
    ap.add_argument("--dense-first", action="store_true",
                    help="only the shipped runtime against tiles from the first step (dense_first=0)")
    args = ap.parse_args()
    if args.sweep or args.dense_first:
        lengths = [1024, 2048, 4096, 8192, 16384, 32768]
        report = {"engine": args.engine, "machine": f"{platform.machine()}, {os.cpu_count()} cores"}
        if args.sweep:
            report["sweep"] = threshold_sweep(args.engine, lengths[:3] if args.quick else lengths)
        else:
            report["dense_first"] = dense_first_cases(args.engine, args.quick)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.out}")
        return
    rng = np.random.default_rng(10)
    add, par, r110 = get_task("addition"), get_task("parity"), get_task("rule110")
    q = args.quick
    rows = []
    for n in ((1000, 2000) if q else (10_000, 20_000)):
        rows.append(case(f"99...9+1, {n:,} nines", "addition", [f"{'9' * n}+1"], args.engine, dense=True,
                         target="steps identical to dense"))
    for n, target in ((20_000, "exact in <= 30 s"), (1_000_000, "exact in <= 10 min")) if not q else ((5000, ""),):
        n = 100_000 if n == 20_000 else n
        rows.append(case(f"99...9+1, {n:,} nines", "addition", [f"{'9' * n}+1"], args.engine, dense=False, target=target))
    rows.append(case("random 1,000,000-digit addition" if not q else "random 100,000-digit addition", "addition",
                     [add.random_line(rng, 100_000 if q else 1_000_000)], args.engine, dense=True,
                     target="no slower than the dense loop (1.3 s)", repeats=3))
    rows.append(case("4,096 random 16-digit additions", "addition", [add.random_line(rng, 16) for _ in range(4096)],
                     args.engine, dense=True, target="no slower than the dense loop", repeats=15))
    ring = 100_000 if q else 1_000_000
    rows.append(case(f"rule110, {ring:,}-cell ring, 100 generations", "rule110",
                     [r110.random_line(rng, ring, 100)], args.engine, dense=True,
                     target="exact against direct simulation"))
    for n in ((2000,) if q else (10_000, 20_000)):
        rows.append(case(f"parity, {n:,} random bits", "parity", [par.random_line(rng, n)], args.engine, dense=True,
                         target="steps identical to dense"))
    for n, target in ((20_000, "exact"),) if q else ((100_000, "exact in <= 60 s"), (1_000_000, "exact in <= 15 min")):
        rows.append(case(f"parity, {n:,} random bits", "parity", [par.random_line(rng, n)], args.engine, dense=False,
                         target=target))
    rows.append(memory_case(100_000 if q else 10_000_000, args.engine))
    report = {"engine": args.engine, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "python": platform.python_version(), "quick": q, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
