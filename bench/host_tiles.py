#!/usr/bin/env python3
"""The K a GPU engine offers when its small tile windows run on the host (engines.with_host_windows):
the deepest K also sets the tile's cells, and the host runs those windows.

    python bench/host_tiles.py [--rounds 3] [--out bench/results/host_tiles_ort_cpu.json]

Long tapes through the split engine, its device engine standing in on the CPU provider (only
windows of HOST_WINDOW_CELLS and more go there: a few a solve), with the CPU's K choices (up to
128, so 128-cell tiles), a bare ort-cuda engine's (up to 256, 256-cell tiles) and a bare
TrtEngine's (up to 8, 64-cell tiles): seconds, best of `rounds` alternating rounds, and the calls
each side ran. Every answer is checked against the oracle. The registry's GPU engines take the
CPU's K (runtime/engines/__init__.py).
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
from sead.runtime.engines import with_host_windows
from sead.runtime.engines.ort import K_CHOICES, K_CHOICES_CUDA, OrtEngine
from sead.runtime.tasks import get_task

CHOICES = {"up to 128": K_CHOICES, "up to 256": K_CHOICES_CUDA, "up to 8": (1, 2, 4, 8)}  # 8: a bare TrtEngine's


def split_engine(ks: tuple[int, ...]):
    return lambda step: with_host_windows(step, OrtEngine(step, "cpu", k_choices=ks))


def cases(rng) -> list[tuple[str, str, str]]:
    bits = lambda n: (rng.integers(0, 2, n, dtype=np.uint8) + 48).tobytes().decode()
    return [("nines 100,000", "addition", "9" * 100_000 + "+1"), ("nines 1,000,000", "addition", "9" * 1_000_000 + "+1"),
            ("parity 100,000 bits", "parity", bits(100_000)), ("parity 1,000,000 bits", "parity", bits(1_000_000))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("bench/out/host_tiles.json"))
    args = ap.parse_args()
    rows = []
    for name, model, line in cases(np.random.default_rng(3)):
        task = get_task(model)
        want = task.answer(task.parse(line))
        runtimes = {label: Runtime(model, split_engine(ks)) for label, ks in CHOICES.items()}
        try:
            best, calls = {}, {}
            for rt in runtimes.values():  # sessions for every K, once
                rt.solve(["9" * 5000 + "+1"] if model == "addition" else [line[:5000]])
            for _ in range(args.rounds):
                for label, rt in runtimes.items():
                    before = rt.engine.host_calls, rt.engine.device_calls
                    start = time.perf_counter()
                    result = rt.solve([line])[0]
                    seconds = time.perf_counter() - start
                    if result.answer != want:
                        raise SystemExit(f"{name}, K {label}: not the oracle's answer")
                    best[label] = min(best.get(label, seconds), seconds)
                    calls[label] = {"host": rt.engine.host_calls - before[0], "device": rt.engine.device_calls - before[1]}
        finally:
            for rt in runtimes.values():
                rt.close()
        row = {"case": name, "steps": result.steps, "seconds": {k: round(v, 3) for k, v in best.items()},
               "calls": calls, "ratio_256_to_128": round(best["up to 256"] / best["up to 128"], 2),
               "ratio_8_to_128": round(best["up to 8"] / best["up to 128"], 2)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    out = {"command": "python bench/host_tiles.py", "rounds": args.rounds, "engine": "ort split (CPU stand-in device)",
           "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores",
           "python": platform.python_version(), "rows": rows, "load_average_at_end": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
