#!/usr/bin/env python3
"""`sead run` on a file of short sums, end to end, against a plain Python loop over the same file,
in one run (and, with --base, against an earlier commit's `sead run`).

    python bench/run_file.py [--problems 2000000] [--digits 16] [--rounds 3] [--base COMMIT]
                             [--out bench/results/run_file_ort_cpu.json]

Every contender is a fresh process that reads the file and writes the answers to a file:
`python -m sead.cli run -i FILE -o OUT --engine ort` (start-up, model load and self-test
included), and the loop `str(int(a) + int(b))` per line. Rounds alternate the contenders; each
keeps its best time. Every output file is compared with the loop's, byte for byte. The earlier
commit runs from a temporary git worktree, imported as `sead`, on the same model file.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from timing import ROOT, commit_as_sead, ratios  # bench/timing.py

LOOP = ("import sys\n"
        "with open(sys.argv[1]) as f, open(sys.argv[2], 'w') as out:\n"
        "    out.write(''.join(str(int(a) + int(b)) + '\\n' for a, b in (line.split('+') for line in f)))\n")


def write_problems(path: Path, count: int, digits: int) -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 10, (count, digits), dtype=np.uint8) + 48
    b = rng.integers(0, 10, (count, digits), dtype=np.uint8) + 48
    a[:, 0] = rng.integers(1, 10, count) + 48
    path.write_bytes(np.concatenate([a, np.full((count, 1), 43, np.uint8), b,
                                     np.full((count, 1), 10, np.uint8)], 1).tobytes())


def timed(command: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, cwd=tempfile.gettempdir(), stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", type=int, default=2_000_000)
    ap.add_argument("--digits", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--base", help="also time this commit's `sead run`")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    model = str(ROOT / "runtime" / "models" / "addition.onnx")
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        tmp = Path(tmp)
        problems, want = tmp / "sums.txt", tmp / "loop.txt"
        write_problems(problems, args.problems, args.digits)
        contenders = {"python loop": ([sys.executable, "-c", LOOP, str(problems), str(want)], None)}
        run = ["-m", "sead.cli", "run", "-i", str(problems), "--engine", "ort", "--model", model, "-o"]
        contenders["sead run"] = ([sys.executable, *run, str(tmp / "sead.txt")], None)
        if args.base:
            env = dict(os.environ, PYTHONPATH=stack.enter_context(commit_as_sead(args.base)))
            contenders[f"sead run at {args.base}"] = ([sys.executable, *run, str(tmp / "base.txt")], env)
        best = {name: float("inf") for name in contenders}
        for r in range(args.rounds):
            for name, (command, env) in (contenders.items() if r % 2 == 0 else reversed(contenders.items())):
                best[name] = min(best[name], timed(command, env))
        expected = want.read_bytes()
        for name, out in (("sead run", "sead.txt"), (f"sead run at {args.base}", "base.txt")):
            if name in best and (tmp / out).read_bytes() != expected:
                raise SystemExit(f"{name}: the answers differ from Python's")
    seconds, to_loop = ratios(best, "python loop", "the loop")
    report = {"problems": args.problems, "digits": args.digits, "rounds": args.rounds, "engine": "ort",
              "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores",
              "python": platform.python_version(), "seconds": seconds, "ratio_to_loop": to_loop, "exact": True,
              "load_average_at_end": os.getloadavg()}
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
