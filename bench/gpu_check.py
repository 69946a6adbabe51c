#!/usr/bin/env python3
"""GPU acceptance check: the GPU engines against the CPU reference, then their throughput.

    python bench/gpu_check.py [--out DIR] [--models NAME_OR_PATH ...] [--quick] [--require-gpu]

For each model (default: the shipped addition, parity and rule110), random problems at several
tape lengths are solved by 'ort' (the CPU reference), 'ort-cuda' (with CUDA graphs, and again
without them as 'ort-cuda-nographs') and 'trt'. Answers, step counts and converged flags must be
identical to 'ort', and answers are compared with the task's exact oracle. GPU engines solve
each case twice: the second pass is where ort-cuda replays CUDA graphs (shapes repeat). Then each
engine is timed on 20,000 16-digit additions and on one 100,000-digit addition (problems/s;
cell-updates/s = sum of tape length x steps over problems, per second; speedup over 'ort'), and
those results too must equal 'ort'. An engine that is missing or fails is reported, never fatal.
Writes gpu_check.json to --out (default: $OUT if set, else ./gpu_check_out). Sized for under 6
minutes on one H200; phases that would start after --budget seconds are skipped and reported.

--cpu-stand-in runs the ort-cuda rows on ONNX Runtime's CPU provider (the same device-resident
code path, graph ids ignored): a check of this script itself on a machine without a GPU.

Exit status
  0  every engine that ran agreed with 'ort', and 'ort' agreed with the oracle
     (GPU engines that are unavailable here are reported, not failed, unless --require-gpu)
  1  an engine disagreed with 'ort' or failed while solving, or (--require-gpu) was unavailable
  2  nothing could be checked: no model found, or 'ort' itself unavailable
  3  the engines agreed, but some answers differ from the oracle (the model, not an engine)
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

# ort-cuda runs twice: as shipped (CUDA graphs for repeating shapes) and with graphs off, so the
# graphs are both checked for exactness and measured
ENGINES = ("ort", "ort-cuda", "ort-cuda-nographs", "trt")
GPU_ENGINES = ("ort-cuda", "ort-cuda-nographs", "trt")
T0 = time.perf_counter()

# (tape length, problems, step cap); the caps only bound the CPU reference's worst case: a problem
# that needs more steps is reported unconverged by every engine alike (and fails the oracle)
FULL = {
    "addition": [(16, 256, None), (1000, 32, None), (100_000, 4, 1024), (1_000_000, 1, 512)],
    "parity": [(16, 256, None), (1000, 32, None), (10_000, 4, None)],
    "rule110": [(16, 256, None), (1000, 32, None), (10_000, 4, None)],
}
QUICK = {task: [(16, 32, None), (200, 4, None)] for task in FULL}
RULE110_GENERATIONS = 100
CPU_STAND_IN = False  # --cpu-stand-in


def say(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


def import_sead() -> None:
    """An installed sead, else this checkout (its root is the package, whatever the folder's name)."""
    try:
        import sead  # noqa: F401
    except ImportError:
        root = Path(__file__).resolve().parents[1]
        spec = importlib.util.spec_from_file_location("sead", root / "__init__.py",
                                                      submodule_search_locations=[str(root)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["sead"] = module
        spec.loader.exec_module(module)


def versions() -> dict:
    out = {"python": platform.python_version(), "machine": platform.machine()}
    for label, names in {"numpy": ["numpy"], "onnx": ["onnx"], "onnxruntime": ["onnxruntime-gpu", "onnxruntime"],
                         "tensorrt": ["tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt_cu12"],
                         "cuda-python": ["cuda-python", "cuda-bindings"]}.items():
        out[label] = next((f"{n} {metadata.version(n)}" for n in names if _installed(n)), None)
    try:
        import onnxruntime
        out["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        pass
    return out


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


def short(text, n: int = 40):
    return text if text is None or len(text) <= n else f"{text[:n]}...({len(text)} chars)"


def compare(results, reference) -> dict:
    """Per-field mismatch counts against 'ort', and the first mismatch."""
    out = {"answers_differ": 0, "steps_differ": 0, "converged_differ": 0, "first_difference": None}
    for i, (r, ref) in enumerate(zip(results, reference)):
        diffs = [(r.answer != ref.answer, "answers_differ"), (r.steps != ref.steps, "steps_differ"),
                 (r.converged != ref.converged, "converged_differ")]
        for bad, key in diffs:
            out[key] += bad
        if any(bad for bad, _ in diffs) and out["first_difference"] is None:
            out["first_difference"] = {"problem": i, "got": [short(r.answer), r.steps, r.converged],
                                       "ort": [short(ref.answer), ref.steps, ref.converged]}
    out["identical"] = not (out["answers_differ"] or out["steps_differ"] or out["converged_differ"])
    return out


def timed_solve(runtime, parsed, max_steps=None):
    start = time.perf_counter()
    results = runtime.solve_parsed(parsed, max_steps)
    return results, time.perf_counter() - start


def load_engines(model: str, report: dict, require_gpu: bool, deadline: float) -> dict:
    from sead.runtime.errors import EngineUnavailable
    from sead.runtime import Runtime

    runtimes = {}
    for name in ENGINES:
        if time.perf_counter() > deadline and name != "ort":
            report[name] = {"available": False, "error": "skipped (time budget)"}
            continue
        say(f"{model}: loading engine {name!r}" + (" (the first TensorRT build takes a while)" if name == "trt" else ""))
        start = time.perf_counter()
        entry = report.setdefault(name, {})
        try:
            if name.startswith("ort-cuda"):  # with and without graphs; on the CPU provider if standing in
                from sead.runtime.engines.ort import OrtCudaEngine
                runtime = Runtime(model, lambda step: OrtCudaEngine(step, cuda_graphs=name == "ort-cuda",
                                                                    device_type="cpu" if CPU_STAND_IN else "cuda"))
            else:
                runtime = Runtime(model, name)
            runtimes[name] = runtime
            entry.update(available=True, setup_seconds=round(time.perf_counter() - start, 2), error=None)
            if name == "trt":
                engine = runtimes[name].engine
                entry.update(device=engine.device, max_row_cells=engine.max_row_cells, max_rows=engine.rows_limit)
        except EngineUnavailable as exc:  # a package or GPU missing; a model TensorRT cannot build is a failure
            entry.update(available=False, error=f"unavailable: {exc}",
                         failed=require_gpu or "cannot run this model" in str(exc))
            say(f"{model}: {name} unavailable: {exc}")
        except Exception as exc:  # a build or load failure is a finding, not a crash
            entry.update(available=False, error=f"failed: {type(exc).__name__}: {exc}", failed=True)
            say(f"{model}: {name} FAILED to load: {type(exc).__name__}: {exc}")
    return runtimes


def check_model(model: str, quick: bool, deadline: float, require_gpu: bool, timed: bool) -> dict | None:
    from sead.runtime.errors import ModelFileError
    from sead.runtime.model_file import load_step_model
    from sead.runtime.tasks import get_task

    try:
        step = load_step_model(model)
    except ModelFileError as exc:
        say(f"MODEL MISSING: {exc}. Export it (sead export) into runtime/models/, or pass --models PATH.")
        return None
    task = get_task(step.metadata.task)
    out = {"model": model, "path": step.path, "task": task.name, "engines": {}, "cases": [], "throughput": []}
    runtimes = load_engines(model, out["engines"], require_gpu, deadline)
    if "ort" not in runtimes:
        return out
    rng = np.random.default_rng(20240601)
    gens = 10 if quick else RULE110_GENERATIONS
    plans = QUICK if quick else FULL
    for length, count, cap in plans.get(task.name, plans["parity"]):  # a task without a plan gets parity's
        label = f"{count} x size {length}" + (f", {gens} generations" if task.convergence == "generations" else "")
        case = {"label": label, "length": length, "problems": count, "max_steps": cap, "engines": {}}
        out["cases"].append(case)
        if time.perf_counter() > deadline:
            case["skipped"] = "time budget"
            say(f"{model}: {label}: skipped (time budget)")
            continue
        lines = [task.random_line(rng, length, generations=gens) for _ in range(count)]
        parsed = [task.parse(line) for line in lines]
        oracle = [task.answer(p) for p in parsed]
        reference = None
        for name, runtime in runtimes.items():
            entry = case["engines"][name] = {}
            try:
                results, seconds = timed_solve(runtime, parsed, cap)
                # a second pass: shapes now repeat, so ort-cuda replays CUDA graphs on its slots
                again = None if name == "ort" else timed_solve(runtime, parsed, cap)[0]
            except Exception as exc:
                entry.update(error=f"{type(exc).__name__}: {exc}", failed=True)
                say(f"{model}: {label}: {name} FAILED: {type(exc).__name__}: {exc}")
                continue
            entry.update(seconds=round(seconds, 3), oracle_correct=sum(r.answer == a for r, a in zip(results, oracle)),
                         converged=sum(r.converged for r in results), steps_max=max(r.steps for r in results))
            if name == "ort":
                reference = results
            elif reference is not None:
                entry.update(compare(results, reference))
                entry["second_pass"] = compare(again, reference)
                entry["identical"] = entry["identical"] and entry["second_pass"]["identical"]
                entry["failed"] = not entry["identical"]
            verdict = "" if name == "ort" else (" same as ort" if entry.get("identical") else " DIFFERS from ort")
            say(f"{model}: {label}: {name} {seconds:.2f}s, oracle {entry['oracle_correct']}/{count}{verdict}")
    if timed:  # throughput for the first model only (the shipped addition by default)
        out["throughput"] = throughput(runtimes, task, quick, deadline)
    for name in ("ort-cuda", "ort-cuda-nographs"):  # which providers ran, did CUDA graphs survive, on which shapes?
        if name in runtimes:
            engine = runtimes[name].engine
            out["engines"][name].update(cuda_graphs=engine.cuda_graphs, graph_shapes=engine.graph_shapes,
                                        providers=engine.providers())
            say(f"{model}: {name} CUDA graphs {'on' if engine.cuda_graphs else 'OFF'}, slots {engine.graph_shapes}, "
                f"providers {sorted({p[0] for p in engine.providers().values()})}")
    for runtime in runtimes.values():
        runtime.close()
    return out


def throughput(runtimes: dict, task, quick: bool, deadline: float) -> list:
    rng = np.random.default_rng(7)
    rows = []
    for count, cells in ((500, 17), (1, 2001)) if quick else ((20_000, 17), (1, 100_001)):
        label = f"{count} x {cells}-cell {task.name} problems"
        row = {"label": label, "problems": count, "cells": cells, "engines": {}}
        rows.append(row)
        if time.perf_counter() > deadline:
            row["skipped"] = "time budget"
            say(f"throughput {label}: skipped (time budget)")
            continue
        parsed = [task.parse(task.random_line(rng, task.size_for(cells), generations=100)) for _ in range(count)]
        cap = 1024 if cells >= 100_000 else None  # as in the correctness cases
        reference = None
        for name, runtime in runtimes.items():
            entry = row["engines"][name] = {}
            try:
                for _ in range(2):  # warm-up: sessions, cuDNN algorithms, arenas; the second pass gives
                    runtime.solve_parsed(parsed[:4096], cap)  # repeated shapes slots and captured graphs
                results, seconds = timed_solve(runtime, parsed, cap)
            except Exception as exc:
                entry.update(error=f"{type(exc).__name__}: {exc}", failed=True)
                say(f"throughput {label}: {name} FAILED: {type(exc).__name__}: {exc}")
                continue
            cells = sum(p.length * r.steps for p, r in zip(parsed, results))
            entry.update(seconds=round(seconds, 4), problems_per_s=count / seconds, cell_updates_per_s=cells / seconds)
            if name == "ort":
                reference = results
            elif reference is not None:  # these batches repeat shapes: where CUDA graphs replay most
                entry.update(compare(results, reference))
                entry["failed"] = not entry["identical"]
                if not entry["identical"]:
                    say(f"throughput {label}: {name} DIFFERS from ort: {entry['first_difference']}")
            say(f"throughput {label}: {name} {seconds:.3f}s = {count / seconds:,.0f} problems/s, "
                f"{cells / seconds:.3e} cell-updates/s")
        base = row["engines"].get("ort", {}).get("seconds")
        for entry in row["engines"].values():
            if base and entry.get("seconds"):
                entry["speedup_vs_ort"] = round(base / entry["seconds"], 2)
    return rows


def table(models: list) -> str:
    lines = []
    for m in models:
        lines.append(f"\n== {m['task']} ({m['path']}) ==")
        for name, e in m["engines"].items():
            state = f"loaded in {e['setup_seconds']}s" if e.get("available") else e.get("error")
            lines.append(f"  {name:17s} {short(state, 110)}")
        lines.append(f"  {'case':24s}" + "".join(f"{n:>26s}" for n in ENGINES))
        for case in m["cases"]:
            cells = []
            for name in ENGINES:
                e = case["engines"].get(name)
                if case.get("skipped"):
                    cells.append("skipped")
                elif e is None:
                    cells.append("-")
                elif e.get("error"):
                    cells.append("FAILED")
                else:
                    same = "" if name == "ort" else {True: " same", False: " DIFF"}.get(e.get("identical"), " ?")
                    cells.append(f"{e['seconds']:.2f}s {e['oracle_correct']}/{case['problems']}{same}")
            lines.append(f"  {case['label']:24s}" + "".join(f"{c:>26s}" for c in cells))
        for row in m["throughput"]:
            lines.append(f"  throughput: {row['label']}" + (" (skipped)" if row.get("skipped") else ""))
            for name, e in row["engines"].items():
                lines.append(f"    {name:17s} " + ("FAILED" if e.get("error") else
                             f"{e['problems_per_s']:>12,.0f} problems/s {e['cell_updates_per_s']:>11.3e} cell-updates/s"
                             f"  x{e.get('speedup_vs_ort', float('nan')):.2f} vs ort"))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu_check_out"))
    parser.add_argument("--models", nargs="+", default=["addition", "parity", "rule110"],
                        help="shipped model names or .onnx paths")
    parser.add_argument("--quick", action="store_true", help="a few short problems (a smoke test, CPU-friendly)")
    parser.add_argument("--require-gpu", action="store_true", help="an unavailable GPU engine is a failure")
    parser.add_argument("--cpu-stand-in", action="store_true",
                        help="run the ort-cuda rows on the CPU provider (checks this script without a GPU)")
    parser.add_argument("--budget", type=float, default=300.0,
                        help="no new phase starts after this many seconds (default 300: done within 6 minutes)")
    args = parser.parse_args(argv)
    global CPU_STAND_IN
    CPU_STAND_IN = args.cpu_stand_in
    import_sead()
    deadline = T0 + args.budget
    env = versions()
    say(f"environment: {json.dumps(env)}")
    models = []
    for model in args.models:
        if time.perf_counter() > deadline:
            say(f"{model}: skipped (time budget)")
            continue
        result = check_model(model, args.quick, deadline, args.require_gpu, timed=not models)
        if result is not None:
            models.append(result)
    entries = [e for m in models for e in m["engines"].values()]
    entries += [e for m in models for c in m["cases"] for e in c["engines"].values()]
    entries += [e for m in models for r in m["throughput"] for e in r["engines"].values()]
    ort_oracle_ok = all(c["engines"].get("ort", {}).get("oracle_correct") == c["problems"]
                        for m in models for c in m["cases"] if "ort" in c["engines"])
    checked = any("ort" in c["engines"] for m in models for c in m["cases"])
    status = 2 if not checked else 1 if any(e.get("failed") for e in entries) else 0 if ort_oracle_ok else 3
    report = {"exit_status": status, "seconds": round(time.perf_counter() - T0, 1), "quick": args.quick,
              "cpu_stand_in": args.cpu_stand_in,
              "environment": env, "models": models}
    print(table(models), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    meaning = {0: "OK", 1: "an engine disagreed with 'ort' or failed", 2: "nothing could be checked",
               3: "engines agree; some answers differ from the oracle (model quality)"}[status]
    say(f"exit {status}: {meaning}; wrote {args.out / 'gpu_check.json'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
