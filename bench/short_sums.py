#!/usr/bin/env python3
"""Short problems through the runtime against a plain Python loop, in one run (issue #21's CPU target).

    python bench/short_sums.py [--engine ort] [--problems 200000] [--repeats 5] [--out FILE]

The loop computes the same answers with Python's integers: `str(int(a) + int(b))` for each
`a+b` line. The runtime solves the lines through Runtime.solve (texts in, answers out), and every
answer is checked against the loop's. Rounds alternate (loop, runtime) and the best of each is
kept, so both meet the same machine; the result is their ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from sead.runtime import Runtime


def lines_of(rng, count: int, digits: int) -> list[str]:
    a = rng.integers(0, 10, (count, digits), dtype=np.uint8) + 48
    b = rng.integers(0, 10, (count, digits), dtype=np.uint8) + 48
    a[:, 0] = rng.integers(1, 10, count) + 48
    joined = np.concatenate([a, np.full((count, 1), 43, np.uint8), b, np.full((count, 1), 10, np.uint8)], 1)
    return joined.tobytes().decode().split("\n")[:count]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", default="ort")
    ap.add_argument("--problems", type=int, default=200_000)
    ap.add_argument("--digits", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    lines = lines_of(np.random.default_rng(0), args.problems, args.digits)
    loop = lambda: [str(int(a) + int(b)) for a, b in (line.split("+") for line in lines)]
    want = loop()
    loop_times, solve_times = [], []
    with Runtime("addition", args.engine) as rt:
        rt.solve(lines[: args.problems // 10])  # sessions made, buffers sized
        for _ in range(args.repeats):
            start = time.perf_counter()
            loop()
            loop_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            got = rt.solve(lines)
            solve_times.append(time.perf_counter() - start)
            if got.answers != want:
                raise SystemExit("the runtime's answers differ from Python's")
        engine = rt.engine_name
    report = {"engine": engine, "problems": args.problems, "digits": args.digits, "repeats": args.repeats,
              "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores", "python": platform.python_version(),
              "load_average_at_end": os.getloadavg(),
              "python_loop_seconds": min(loop_times), "solve_seconds": min(solve_times),
              "ratio": min(solve_times) / min(loop_times), "exact": True,
              "all_loop_seconds": loop_times, "all_solve_seconds": solve_times}
    print(f"{args.problems:,} sums of {args.digits}-digit numbers: Python loop {report['python_loop_seconds']:.3f} s, "
          f"Runtime.solve ({engine}) {report['solve_seconds']:.3f} s: {report['ratio']:.1f}x")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
