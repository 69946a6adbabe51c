#!/usr/bin/env python3
"""One large NDJSON stream through `sead serve` over loopback, against the library on the same
problems (and, with --base, an earlier commit's server), in one run.

    python bench/ndjson_stream.py [--problems 100000] [--rounds 3] [--base COMMIT]
                                  [--out bench/results/ndjson_stream_ort_cpu.json]

Each server is `python -m sead.cli serve --engine ort` on a free loopback port (the earlier
commit's from a temporary git worktree, imported as `sead`). A round posts the stream once to
each server and solves the same lines with `Runtime.solve` in this process; each keeps its best
time. Every record is checked against Python integers.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from load import free_port, start_server  # bench/load.py
from short_sums import lines_of  # bench/short_sums.py
from timing import commit_as_sead, ratios  # bench/timing.py


def post(port: int, body: bytes, want: list[str]) -> float:
    start = time.perf_counter()
    r = httpx.post(f"http://127.0.0.1:{port}/v1/solve", content=body, timeout=600,
                   headers={"content-type": "application/x-ndjson"})
    seconds = time.perf_counter() - start
    got = [json.loads(line).get("output") for line in r.text.splitlines()]
    if r.status_code != 200 or got != want:
        raise SystemExit(f"port {port}: status {r.status_code}, answers differ from Python's")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--base", help="also time this commit's server")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    from sead.runtime import Runtime

    lines = lines_of(np.random.default_rng(0), args.problems, 16)
    want = [str(int(a) + int(b)) for a, b in (line.split("+") for line in lines)]
    body = "".join(json.dumps(line) + "\n" for line in lines).encode()
    servers, procs = {"sead serve": (free_port(), None)}, []
    with contextlib.ExitStack() as stack:
        if args.base:
            env = dict(os.environ, PYTHONPATH=stack.enter_context(commit_as_sead(args.base)))
            servers[f"sead serve at {args.base}"] = (free_port(), env)
        try:
            for port, env in servers.values():
                procs.append(start_server(port, env=env, cwd=tempfile.gettempdir()))
            best = {name: float("inf") for name in [*servers, "Runtime.solve"]}
            with Runtime("addition", "ort") as rt:
                for _ in range(args.rounds):
                    for name, (port, _) in servers.items():
                        best[name] = min(best[name], post(port, body, want))
                    start_time = time.perf_counter()
                    if rt.solve(lines).answers != want:
                        raise SystemExit("the library's answers differ from Python's")
                    best["Runtime.solve"] = min(best["Runtime.solve"], time.perf_counter() - start_time)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(30)
    seconds, to_library = ratios(best, "Runtime.solve", "the library")
    report = {"problems": args.problems, "digits": 16, "rounds": args.rounds, "engine": "ort",
              "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores",
              "python": platform.python_version(), "seconds": seconds, "ratio_to_library": to_library,
              "exact": True, "load_average_at_end": os.getloadavg()}
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
