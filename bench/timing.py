"""The timing helper that bench scripts share: stdlib only, so that bench/before_after.py can load
it beside any commit's `sead`."""
from __future__ import annotations

import time
from typing import Callable


def time_solves(solve: Callable[[list[str]], list], lines: list[str], repeats: int) -> tuple[list[float], list]:
    """One warm-up solve, then `repeats` timed ones. -> (seconds of each, the last solve's results)."""
    solve(lines)
    times, results = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        results = solve(lines)
        times.append(time.perf_counter() - start)
    return times, results
