"""`sead run --ray` on a local Ray instance: a 100,000-line file, every answer checked.

    python bench/ray_run.py                 # 100,000 lines; results in bench/results/ray.json
    python bench/ray_run.py --lines 10000   # quicker

It writes LINES random additions (1 to 30 digits per operand, so tape lengths vary) to a file, runs
`sead run --ray local` on it (a new Ray instance on 127.0.0.1 for the run, no dashboard) and then a
plain local `sead run` on the same file, and checks every answer of both against Python integers.
The wall times include Ray's start (about 10 s here) and the actors' model loading.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "ray.json"


def timed_run(args: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "sead.cli", "run", *args], capture_output=True, text=True,
                          timeout=1800)
    return time.perf_counter() - start, proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--actors", type=int, default=None, help="--ray-actors (default: one per CPU)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    rng = random.Random(0)
    pairs = [(rng.randrange(10 ** rng.randint(1, 30)), rng.randrange(10 ** rng.randint(1, 30)))
             for _ in range(args.lines)]
    want = [str(a + b) for a, b in pairs]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "problems.txt"
        path.write_text("".join(f"{a}+{b}\n" for a, b in pairs))
        actors = ["--ray-actors", str(args.actors)] if args.actors else []
        ray_seconds, ray = timed_run(["--ray", "local", *actors, "-i", str(path), "-o", f"{folder}/ray.txt"])
        if ray.returncode != 0:
            raise SystemExit(f"sead run --ray exited {ray.returncode}: {ray.stderr.strip()[-2000:]}")
        local_seconds, local = timed_run(["--engine", "ort", "-i", str(path), "-o", f"{folder}/local.txt"])
        got_ray = Path(f"{folder}/ray.txt").read_text().splitlines()
        got_local = Path(f"{folder}/local.txt").read_text().splitlines()

    import ray as ray_module

    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "ray": ray_module.__version__},
        "command": " ".join(["python", "bench/ray_run.py", *sys.argv[1:]]),
        "lines": args.lines,
        "ray": {"exit_code": ray.returncode, "seconds": round(ray_seconds, 2),
                "exact": sum(g == w for g, w in zip(got_ray, want)), "answers": len(got_ray)},
        "local": {"exit_code": local.returncode, "seconds": round(local_seconds, 2),
                  "exact": sum(g == w for g, w in zip(got_local, want)), "answers": len(got_local)},
    }
    result["every_answer_exact"] = result["ray"]["exact"] == result["ray"]["answers"] == args.lines
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
