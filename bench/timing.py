"""What bench scripts share: timing, an earlier commit as `sead`, best times as ratios. Stdlib
only, so that bench/before_after.py can load it beside any commit's `sead`."""
from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]


def time_solves(solve: Callable[[list[str]], list], lines: list[str], repeats: int) -> tuple[list[float], list]:
    """One warm-up solve, then `repeats` timed ones. -> (seconds of each, the last solve's results)."""
    solve(lines)
    times, results = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        results = solve(lines)
        times.append(time.perf_counter() - start)
    return times, results


@contextlib.contextmanager
def commit_as_sead(commit: str) -> Iterator[str]:
    """This repository at `commit`, importable as `sead`: yields the folder to put on PYTHONPATH
    (a temporary git worktree, linked as `sead` there, removed afterwards)."""
    with tempfile.TemporaryDirectory() as tmp:
        old, parent = Path(tmp) / "old", Path(tmp) / "parent"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), commit], check=True,
                       capture_output=True)
        try:
            parent.mkdir()
            (parent / "sead").symlink_to(old)
            yield str(parent)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], capture_output=True)


def ratios(best: dict[str, float], base: str, unit: str) -> tuple[dict, dict]:
    """Best seconds of each contender -> (seconds, each over `base`'s), rounded; printed a line each."""
    for name, seconds in best.items():
        print(f"{name}: {seconds:.3f} s ({seconds / best[base]:.1f}x {unit})")
    return {k: round(v, 3) for k, v in best.items()}, {k: round(v / best[base], 2) for k, v in best.items()}
