#!/usr/bin/env python3
"""GPU acceptance check: exactness of the GPU engine against the CPU engine and the oracles, then
its speed against the formulation's ceiling and against PyTorch peers, all in one process.

    python bench/gpu_check.py [--out DIR] [--quick] [--cpu-stand-in] [--budget SECONDS]

Sections (each timed; a section that fails is recorded and the run goes on):
  conformance  every shipped model: random problems at several sizes through 'ort' (CPU, the
               reference), 'ort-cuda' (CUDA graphs on) and 'ort-cuda-nographs'; answers, steps and
               converged flags must be identical to 'ort', answers equal to the task's oracle
  short        2,000,000 random 16-digit sums through Runtime.solve (texts in, answers out), exact
               against Python ints; where the time goes (graph calls by kind, and the host path
               alone, through an engine that does nothing); the same sums in the lookup layout
               (what `ort` runs on a CPU); the same solve with 2x and 4x the
               engine's workers (each runs its batches' host work between device calls), and
               with batches 4x smaller and larger;
               200,000 of them through 'ort' (identical), also with 1, 2, 4 and 8 workers (its
               default: one a core); a naive PyTorch CUDA loop on the same
               texts (the peer a PyTorch user writes first)
  file         `sead run` on a file of 2,000,000 random 16-digit sums, file to file in a fresh
               process, with 'ort-cuda' and 'ort', against a Python loop over the same file
  step         4,096 x 1,024 cells: cell-updates/s of one step in each formulation measured here
               (the exported step on ORT CUDA with IO binding; sead's cl, cf and lookup advance graphs;
               PyTorch eager; PyTorch with a CUDA graph), the fp32 limit (67 TFLOP/s over the
               rule's FLOPs per cell-update), and 4,096 random 1,000-digit sums end to end, in
               the cl and the lookup layouts
  long         100,000 and 1,000,000 nines + 1, parity of 100,000 and 1,000,000 random bits, one
               random 10,000,000-digit sum: seconds, steps, exact; the 100,000-cell ones with the
               engine's default (small tile windows on the CPU provider) and with every window
               on the GPU in each layout; 10,000-cell cases against 'ort'
  products     one random product of 200, 400 and 1,000 digits, exact; 100-digit ones against 'ort'
  windows      a long tape's tile window (K = 256) of each shipped tape model in each form of the
               rule (cl, cf, cf with FusedConv, the lookup form `ort` runs, and class-coded
               blocks; bench/window_forms.py): us a step, and the same states as cl
Writes gpu_check.json to --out (default $OUT, else ./gpu_check_out); sized for under 6 minutes on
one H200. --cpu-stand-in runs the 'ort-cuda' rows on the CPU provider (layout cl, the GPU path's
graphs and bookkeeping) with --quick sizes: a check of this script on a machine without a GPU.

Exit status: 0 every row identical to 'ort' and exact; 1 a row differed or failed; 2 no GPU
engine could run (unless --cpu-stand-in).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path

import numpy as np

T0 = time.perf_counter()
H200_FP32_FLOPS = 67e12  # the datasheet's plain fp32 rate (no tensor cores: sead runs fp32, never TF32)
REPORT: dict = {"sections": {}}
OUT: Path = Path(".")


def say(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


def import_sead() -> None:
    """An installed sead, else this checkout (its root is the package, whatever the folder's name)."""
    try:
        import sead  # noqa: F401
    except ImportError:
        root = Path(__file__).resolve().parents[1]
        spec = importlib.util.spec_from_file_location("sead", root / "__init__.py", submodule_search_locations=[str(root)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["sead"] = module
        spec.loader.exec_module(module)


def versions() -> dict:
    out = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()}
    for label, names in {"numpy": ["numpy"], "onnx": ["onnx"], "onnxruntime": ["onnxruntime-gpu", "onnxruntime"],
                         "torch": ["torch"]}.items():
        out[label] = next((f"{n} {metadata.version(n)}" for n in names if _installed(n)), None)
    try:
        import onnxruntime
        out["onnxruntime_providers"] = onnxruntime.get_available_providers()
        out["onnxruntime_file"] = onnxruntime.__file__
    except ImportError:
        pass
    try:
        import torch
        if torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return out


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


def save() -> None:
    REPORT["seconds"] = round(time.perf_counter() - T0, 1)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "gpu_check.json").write_text(json.dumps(REPORT, indent=1, default=str))


def section(name: str, deadline: float):
    """Decorator: run a section, record its result or failure, save the report."""
    def wrap(fn):
        def run(*args):
            if time.perf_counter() > deadline:
                REPORT["sections"][name] = {"skipped": "time budget"}
                say(f"{name}: skipped (time budget)")
                return
            start = time.perf_counter()
            say(f"== {name}")
            try:
                REPORT["sections"][name] = fn(*args)
            except Exception as exc:
                REPORT["sections"][name] = {"failed": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
                say(f"{name} FAILED: {type(exc).__name__}: {exc}")
            REPORT["sections"][name]["section_seconds"] = round(time.perf_counter() - start, 1)
            save()
        return run
    return wrap


# -- engines ---------------------------------------------------------------------------------------

LOOKUP_ENTRIES = 1 << 24  # lookup windows on a GPU also for addition (its tables: 1.7 MB, well inside L2)


def gpu_engine(graphs: bool = True, layout: str | None = None, window_layout: str | None = None,
               workers: int | None = None, host_windows: bool = True):
    """'ort-cuda' (its path on the CPU provider with --cpu-stand-in). host_windows: small tile
    windows on `ort` on the host, as make_engine builds the engine (runtime/engines/host_windows.py);
    False: every window on the GPU."""
    from sead.runtime.engines import with_host_windows
    from sead.runtime.engines.ort import K_CHOICES, K_CHOICES_CUDA, OrtEngine
    ks = K_CHOICES if host_windows else K_CHOICES_CUDA  # as the registry's ort-cuda, or the bare engine's

    def make(step):
        if STAND_IN:
            device = OrtEngine(step, "cpu", layout=layout or "cl", k_choices=ks, cuda_graphs=graphs,
                               window_layout=window_layout, graph_rows=GRAPH_ROWS, workers=workers,
                               lookup_entries=LOOKUP_ENTRIES)
        else:
            device = OrtEngine(step, "cuda", layout=layout, k_choices=ks, cuda_graphs=graphs, window_layout=window_layout,
                               graph_rows=GRAPH_ROWS, workers=workers, lookup_entries=LOOKUP_ENTRIES)
        return with_host_windows(step, device) if host_windows else device
    return make


def runtime(model: str, engine, **kw):
    from sead.runtime import Runtime
    return Runtime(model, engine, **kw)


def compare(got, ref) -> dict:
    answers = sum(a != b for a, b in zip(got.answers, ref.answers))
    steps = int((np.asarray(got.steps) != np.asarray(ref.steps)).sum())
    conv = int((np.asarray(got.converged) != np.asarray(ref.converged)).sum())
    return {"identical": answers == steps == conv == 0 and len(got) == len(ref),
            "answers_differ": answers, "steps_differ": steps, "converged_differ": conv}


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def warm_best(rt, lines: list[str]):
    """A warm-up on a quarter of the lines (sessions, slots, captured graphs), then the best of two
    solves of them all. -> (the last solve's results, its best seconds)."""
    rt.solve(lines[: len(lines) // 4])
    (got, first), (got, second) = timed(rt.solve, lines), timed(rt.solve, lines)
    return got, min(first, second)


def digit_lines(rng, count: int, digits: int) -> list[str]:
    """count random sums of two `digits`-digit numbers, made with numpy (no per-digit Python)."""
    a = rng.integers(0, 10, (count, digits), dtype=np.uint8) + 48
    b = rng.integers(0, 10, (count, digits), dtype=np.uint8) + 48
    a[:, 0] = rng.integers(1, 10, count) + 48
    joined = np.concatenate([a, np.full((count, 1), ord("+"), np.uint8), b, np.full((count, 1), 10, np.uint8)], 1)
    return joined.tobytes().decode().split("\n")[:count]


# -- sections --------------------------------------------------------------------------------------

def conformance(quick: bool) -> dict:
    from sead.runtime.tasks import get_task
    rng = np.random.default_rng(20261204)
    plans = {"addition": [(16, 256), (1000, 32), (30_000, 2)], "parity": [(16, 256), (1000, 32), (20_000, 2)],
             "rule110": [(16, 256), (1000, 32), (20_000, 2)], "multiplication": [(6, 64), (24, 16), (64, 4)]}
    if quick:
        plans = {k: [(s, c) for s, c in v[:2]] for k, v in plans.items()}
    out = {}
    for model, cases in plans.items():
        task = get_task(model)
        # every window on the GPU here (the default runs small ones on the host: the long section)
        engines = {"ort": "ort", "ort-cuda": gpu_engine(True, host_windows=False),
                   "ort-cuda-nographs": gpu_engine(False, host_windows=False)}
        runtimes = {name: runtime(model, e) for name, e in engines.items()}
        rows = []
        for size, count in cases:
            lines = [task.random_line(rng, size, generations=int(rng.integers(0, 200))) for _ in range(count)]
            if model == "addition":
                lines.append("9" * size + "+1")
            oracle = [task.answer(task.parse(line)) for line in lines]
            row = {"size": size, "problems": len(lines)}
            ref = None
            for name, rt in runtimes.items():
                for attempt in range(2):  # the second pass replays CUDA graphs on repeated shapes
                    got, seconds = timed(rt.solve, lines)
                    entry = {"seconds": round(seconds, 3), "oracle_exact": sum(a == b for a, b in zip(got.answers, oracle))}
                    if ref is not None:
                        entry.update(compare(got, ref))
                    row[f"{name}#{attempt + 1}"] = entry
                    if name == "ort":
                        ref = got
                        break
            ok = all(e.get("identical", True) and e["oracle_exact"] == len(lines) for k, e in row.items()
                     if isinstance(e, dict))
            row["ok"] = ok
            say(f"{model} size {size} x{len(lines)}: {'identical and exact' if ok else 'DIFFERS'} "
                "(" + ", ".join(f"{k} {v['seconds']}s" for k, v in row.items() if isinstance(v, dict)) + ")")
            rows.append(row)
        gpu = runtimes["ort-cuda"].engine
        out[model] = {"rows": rows, "graph_shapes": len(gpu.graph_shapes), "cuda_graphs_on": gpu.cuda_graphs,
                      "providers": sorted({p[0] for p in gpu.providers().values()})}
        for rt in runtimes.values():
            rt.close()
    out["ok"] = all(r["ok"] for m in out.values() if isinstance(m, dict) for r in m.get("rows", []))
    return out


def short_sums(quick: bool) -> dict:
    rng = np.random.default_rng(7)
    n = 200_000 if quick else 2_000_000
    lines = digit_lines(rng, n, 16)
    want, py_seconds = timed(lambda: [str(int(a) + int(b)) for a, b in (line.split("+") for line in lines)])
    out = {"problems": n, "python_int_loop_seconds": round(py_seconds, 3)}
    with runtime("addition", gpu_engine(True)) as rt:
        got, best = warm_best(rt, lines)
        out.update(seconds=round(best, 3), problems_per_s=round(n / best), exact=got.answers == want,
                   steps_histogram=np.bincount(np.asarray(got.steps)).tolist())
        say(f"{n:,} 16-digit sums: {n / best:,.0f} problems/s (exact: {out['exact']})")
        out["where_the_time_goes"] = time_split(rt, lines)
        head = lines[: n // 10]
        gpu_head = rt.solve(head)
        workers, cells = rt.engine.workers, rt.scheduler.max_batch_cells
    # the same sums in the lookup layout (addition's 76^3-entry step table, 3 operators a step
    # against cl's 7), which `ort` runs on a CPU: which layout whole rows should take on a GPU
    with runtime("addition", gpu_engine(True, layout="lookup", window_layout="lookup")) as rt:
        got, best = warm_best(rt, lines)
        out["lookup_layout"] = {"seconds": round(best, 3), "problems_per_s": round(n / best), "exact": got.answers == want}
        say(f"{n:,} 16-digit sums, lookup layout: {n / best:,.0f} problems/s (exact: {out['lookup_layout']['exact']})")
    out["batching"] = batching_sweep(lines, want, workers, cells)
    with runtime("addition", "ort") as cpu:  # warmed as the GPU row is: a cold solve also makes the sessions
        ref, cold = timed(cpu.solve, head)
        _, seconds = warm_best(cpu, head)
        cpu_workers = cpu.engine.workers
    out["ort_cpu"] = {"problems": len(head), "seconds": round(seconds, 3), "problems_per_s": round(len(head) / seconds),
                      "cold_seconds": round(cold, 3), "workers": cpu_workers, **compare(gpu_head, ref)}
    say(f"ort on {os.cpu_count()} CPU cores ({cpu_workers} workers): {len(head) / seconds:,.0f} problems/s "
        f"(cold: {len(head) / cold:,.0f}); identical: {out['ort_cpu']['identical']}")
    out["ort_cpu_workers"] = []  # how `ort`'s default (a worker per core) scales on a many-core host
    for w in sorted({1, 2, 4, 8, cpu_workers}):
        if w <= cpu_workers:
            with runtime("addition", "ort", workers=w) as cpu:
                got, best = warm_best(cpu, head)
            out["ort_cpu_workers"].append({"workers": w, "problems_per_s": round(len(head) / best),
                                           "identical": got.answers == ref.answers})
            say(f"ort, workers {w}: {len(head) / best:,.0f} problems/s")
    try:
        out["torch_naive"] = torch_naive_sums(lines[:200_000] if not quick else lines[:20_000], want)
    except Exception as exc:
        out["torch_naive"] = {"failed": f"{type(exc).__name__}: {exc}"}
    out["ok"] = out["exact"] and out["lookup_layout"]["exact"] and out["ort_cpu"]["identical"] \
        and all(row["identical"] for row in out["ort_cpu_workers"])
    return out


def batching_sweep(lines: list[str], want: list[str], workers: int, cells: int) -> list[dict]:
    """The same solve with more batches side by side than the engine's default (each worker runs
    its batches' host work, codes, retiring and decoding, between device calls, and the host has
    many cores), and with batches 4x smaller and larger. -> one row per setting: problems/s, best
    of two after a warm-up, each checked exact."""
    rows = []
    for w, c in ((workers, cells), (2 * workers, cells), (4 * workers, cells), (workers, cells // 4), (workers, 4 * cells)):
        with runtime("addition", gpu_engine(True, workers=w), max_batch_cells=c) as rt:
            got, best = warm_best(rt, lines)
            if got.answers != want:
                raise AssertionError(f"{w} workers, {c:,}-cell batches: answers differ from Python's")
        rows.append({"workers": w, "batch_cells": c, "problems_per_s": round(len(lines) / best)})
        say(f"{w} workers, {c:,}-cell batches: {len(lines) / best:,.0f} problems/s")
    return rows


FILE_LOOP = ("import sys\n"
             "with open(sys.argv[1]) as f, open(sys.argv[2], 'w') as out:\n"
             "    out.write(''.join(str(int(a) + int(b)) + '\\n' for a, b in (line.split('+') for line in f)))\n")
SEAD_CLI = ("import sys; sys.path.insert(0, sys.argv.pop(1)); from gpu_check import import_sead; import_sead(); "
            "from sead.cli.main import main; sys.argv[0] = 'sead'; main()")


def run_file(quick: bool) -> dict:
    """`sead run` file to file in a fresh process (start-up, model load, self-test and the
    validation pass included) against a Python loop over the same file, per engine."""
    import subprocess
    import tempfile

    n = 200_000 if quick else 2_000_000
    out = {"problems": n}
    with tempfile.TemporaryDirectory() as tmp:
        problems, want = Path(tmp) / "sums.txt", Path(tmp) / "loop.txt"
        problems.write_text("\n".join(digit_lines(np.random.default_rng(3), n, 16)) + "\n")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", FILE_LOOP, str(problems), str(want)], check=True)
        out["python_file_loop_seconds"] = loop = round(time.perf_counter() - start, 3)
        for engine in (["ort"] if STAND_IN else ["ort-cuda", "ort"]):
            answers = Path(tmp) / f"{engine}.txt"
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", SEAD_CLI, str(Path(__file__).parent), "run", "--engine", engine,
                                   "-i", str(problems), "-o", str(answers)], capture_output=True, text=True)
            seconds = time.perf_counter() - start
            exact = proc.returncode == 0 and answers.read_bytes() == want.read_bytes()
            out[engine] = {"seconds": round(seconds, 3), "problems_per_s": round(n / seconds),
                           "ratio_to_loop": round(seconds / loop, 2), "exact": exact, "ok": exact}
            if proc.returncode:
                out[engine]["stderr"] = proc.stderr[-2000:]
            say(f"sead run --engine {engine}, {n:,} sums file to file: {seconds:.2f} s ({seconds / loop:.1f}x the "
                f"Python loop); exact: {exact}")
    out["ok"] = all(out[e]["ok"] for e in out if isinstance(out[e], dict))
    return out


class _NullBatch:
    """Every row settles at once, every class 0: the runtime's host path with no engine work."""

    def __init__(self, codes):
        self.codes, self.live = codes, np.arange(len(codes))

    @property
    def rows(self):
        return len(self.live)

    def advance(self, k, budget=None):
        return np.zeros(len(self.live), np.int64)

    def classes(self):
        return np.zeros(self.codes.shape, np.uint8)[self.live]

    def state_codes(self):
        return np.zeros(self.codes.shape, np.uint8)[self.live]

    def keep(self, rows):
        self.live = self.live[rows]

    def close(self):
        pass


def time_split(rt, lines: list[str]) -> dict:
    """One more solve with the engine's graph calls timed by kind (prepare, advance, finish: the
    seconds summed over the workers, so they may pass the wall time), and the same lines through
    an engine that does nothing, on the same batch sizes: the host path's own time."""
    from sead.runtime.engines import ort

    calls: dict = {}
    plain = ort.OrtBatch._run

    def run(batch, session, inputs, outputs, run_options=None):
        kind = next((k[1] for k, v in batch.engine._sessions.items() if v is session), "other")
        start = time.perf_counter()
        plain(batch, session, inputs, outputs, run_options)
        seconds, count = calls.get(kind, (0.0, 0))
        calls[kind] = (seconds + time.perf_counter() - start, count + 1)

    ort.OrtBatch._run = run
    try:
        _, wall = timed(rt.solve, lines)
    finally:
        ort.OrtBatch._run = plain
    engine = rt.engine

    class NullEngine:
        name, k_choices, workers = "null", engine.k_choices, engine.workers
        batch_cells, max_row_cells = engine.batch_cells, engine.max_row_cells

        def __init__(self, step):
            pass

        def max_rows(self, cells):
            return engine.max_rows(cells)

        def start(self, codes, wrap=False, generations=False, state_codes=None):
            return _NullBatch(codes)

        def close(self):
            pass

    with runtime("addition", NullEngine, self_test=False) as null:
        null.solve(lines[: len(lines) // 4])
        _, host = timed(null.solve, lines)
    split = {"wall_seconds": round(wall, 3), "host_path_seconds_no_engine": round(host, 3),
             "graph_calls": {k: {"seconds": round(s, 3), "calls": c} for k, (s, c) in calls.items()}}
    say(f"time split: {json.dumps(split)}")
    return split


def _torch_rule(model: str):
    """The exported step's rule in PyTorch (the peers), from the same weights the runtime reads."""
    import torch
    from sead.runtime.model_file import load_step_model
    from sead.runtime.rule import Rule
    rule = Rule.from_step(load_step_model(model))
    dev = "cuda" if torch.cuda.is_available() and not STAND_IN else "cpu"
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(dev)
    return rule, dev, {"w_in": t(rule.w_in), "b_in": t(rule.b_in), "w_out": t(rule.w_out[:, :, None]),
                       "b_out": t(rule.b_out), "r_in": t(rule.read_in[:, :, None]), "r_in_b": t(rule.read_in_bias),
                       "r_out": t(rule.read_out[:, :, None]), "r_out_b": t(rule.read_out_bias)}


def torch_naive_sums(lines: list[str], want: list[str]) -> dict:
    """texts -> one-hot on the GPU -> step until no row changes (checked on the host every step) ->
    readout -> answers: what a PyTorch user writes first."""
    import torch
    import torch.nn.functional as F
    from sead.runtime.tasks import get_task
    task = get_task("addition")
    rule, dev, w = _torch_rule("addition")
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False

    def solve(texts):
        problems = task.parse_many(texts)
        length = int(problems.lengths.max()) + 1
        codes = torch.from_numpy(task.codes(problems, np.arange(len(problems)), (length,)).astype(np.int64)).to(dev)
        x = F.one_hot(codes, rule.input_channels).permute(0, 2, 1).float()
        x[:, 0] = (codes > 0).float()
        state = torch.zeros(len(texts), rule.state_channels, length, device=dev)
        mask = x[:, :1]
        while True:
            h = F.relu(F.conv1d(torch.cat([x, state], 1), w["w_in"], w["b_in"], padding=1))
            nxt = torch.where(F.conv1d(h, w["w_out"], w["b_out"]) > 0, 1.0, -1.0) * mask
            if torch.equal(nxt, state):
                break
            state = nxt
        logits = F.conv1d(F.relu(F.conv1d(torch.cat([x, state], 1), w["r_in"], w["r_in_b"])), w["r_out"], w["r_out_b"])
        classes = logits.argmax(1).to(torch.uint8).cpu().numpy()
        return task.decode_classes(classes, problems, np.arange(len(problems)))

    solve(lines[:1000])
    got, seconds = timed(solve, lines)
    out = {"problems": len(lines), "seconds": round(seconds, 3), "problems_per_s": round(len(lines) / seconds),
           "exact": got == want[: len(lines)]}
    say(f"naive PyTorch loop: {len(lines) / seconds:,.0f} problems/s (exact: {out['exact']})")
    return out


def step_formulations(quick: bool) -> dict:
    """One step's cell-updates/s at 4,096 x 1,024 cells, formulation by formulation."""
    import onnxruntime as ort
    from sead.runtime import graph as G
    from sead.runtime.bench import model_costs
    from sead.runtime.layout import neighbour_table
    from sead.runtime.model_file import load_step_model
    from sead.runtime.rule import Rule
    from sead.runtime.tasks import get_task
    rows, length, k = (256, 1024, 16) if quick else (4096, 1024, 16)
    cells = rows * length
    step = load_step_model("addition")
    rule = Rule.from_step(step)
    task = get_task("addition")
    rng = np.random.default_rng(3)
    lines = digit_lines(rng, rows, length - 2)
    problems = task.parse_many(lines)
    codes = task.codes(problems, np.arange(rows), (length,))
    flops = model_costs(step)["flops_per_cell_update"] if callable(model_costs) else None
    out = {"rows": rows, "length": length, "flops_per_cell_update": flops,
           "fp32_limit_cell_updates_per_s": H200_FP32_FLOPS / flops if flops else None}
    device = "cpu" if STAND_IN else "cuda"
    providers = ["CPUExecutionProvider"] if STAND_IN else [("CUDAExecutionProvider", {"use_tf32": 0})]

    def ort_rate(model, feeds: dict, outputs: dict, steps_per_run: int, swap=None) -> float:
        session = ort.InferenceSession(model.SerializeToString(), providers=providers)
        declared = {i.name for i in session.get_inputs()}
        values = {n: ort.OrtValue.ortvalue_from_numpy(a, device, 0) for n, a in feeds.items() if n in declared}
        outs = {n: ort.OrtValue.ortvalue_from_shape_and_type(list(s), dt, device, 0) for n, (s, dt) in outputs.items()}

        def run():
            binding = session.io_binding()
            for n, v in values.items():
                binding.bind_ortvalue_input(n, v)
            for n, v in outs.items():
                binding.bind_ortvalue_output(n, v)
            session.run_with_iobinding(binding)
            if swap:
                values[swap[0]], outs[swap[1]] = outs[swap[1]], values[swap[0]]
        run()
        run()
        reps = 3 if quick else 10
        start = time.perf_counter()
        for _ in range(reps):
            run()
        if not STAND_IN:
            outs[next(iter(outs))].numpy()  # a sync point
        return cells * steps_per_run * reps / (time.perf_counter() - start)

    x = task.encode_many(task.parse_many(lines[:1]) and [problems.parsed(i) for i in range(rows)], length)
    state = np.zeros((rows, rule.state_channels, length), np.float32)
    out["exported_step_ort_iobinding"] = ort_rate(
        step.proto, {"problem": np.ascontiguousarray(x), "state": state},
        {"next_state": (state.shape, np.float32), "logits": ((rows, rule.classes, length), np.float32)}, 1,
        swap=("state", "next_state"))
    table = neighbour_table((length,), False)
    prep = ort.InferenceSession(G.cl_prepare(rule, True).SerializeToString(), providers=providers)
    feats = dict(zip([o.name for o in G.cl_prepare(rule, True).graph.output],
                     prep.run(None, {"codes": codes, "neighbours": np.ascontiguousarray(table)})))
    cl = G.cl_advance(rule, k, "count")
    feeds = {n: feats[n] for n in ("features", "mask", "minus_mask", "state")}
    feeds["neighbours"] = np.ascontiguousarray(table)
    out["sead_cl_advance"] = ort_rate(cl, feeds, {"state_out": (feats["state"].shape, np.float32),
                                                  "last": ((rows,), np.float32)}, k, swap=("state", "state_out"))
    prep_cf = G.cf_prepare(rule, False, True)
    feats = dict(zip([o.name for o in prep_cf.graph.output],
                     ort.InferenceSession(prep_cf.SerializeToString(), providers=providers).run(None, {"codes": codes})))
    out["sead_cf_advance"] = ort_rate(G.cf_advance(rule, k, False, "count"), feats,
                                      {"state_out": (feats["state"].shape, np.float32), "last": ((rows,), np.float32)}, k,
                                      swap=("state", "state_out"))
    # the lookup form (addition's 76^3-entry table): rows packed end to end, as `ort` runs them
    tables = G.lookup_tables(rule, LOOKUP_ENTRIES)
    prep_lk = ort.InferenceSession(G.lookup_prepare(tables, True, True).SerializeToString(), providers=providers)
    feats = {"state": prep_lk.run(None, {"codes": codes.reshape(1, -1)})[0], **tables.inputs,
             "rows": np.array([rows, length], np.int64)}
    out["sead_lookup_advance"] = ort_rate(G.lookup_advance(tables, k, True, "count"), feats,
                                          {"state_out": (feats["state"].shape, np.float32), "last": ((rows,), np.float32)},
                                          k, swap=("state", "state_out"))
    try:
        out.update(torch_step_rates(x, k, quick))
    except Exception as exc:
        out["torch"] = {"failed": f"{type(exc).__name__}: {exc}"}
    # end to end: 4,096 random 1,000-digit sums through Runtime.solve
    e2e_lines = digit_lines(rng, rows, 1000 if not quick else 200)
    with runtime("addition", gpu_engine(True)) as rt:
        rt.solve(e2e_lines)
        got, seconds = timed(rt.solve, e2e_lines)
        p = task.parse_many(e2e_lines)
        updates = int((p.lengths * np.asarray(got.steps)).sum())
        exact = got.answers == [str(int(a) + int(b)) for a, b in (line.split("+") for line in e2e_lines)]
    out["end_to_end"] = {"problems": rows, "seconds": round(seconds, 3), "cell_updates": updates,
                         "cell_updates_per_s": updates / seconds, "exact": exact}
    with runtime("addition", gpu_engine(True, layout="lookup", window_layout="lookup")) as rt:
        rt.solve(e2e_lines)
        got, seconds = timed(rt.solve, e2e_lines)
    out["end_to_end_lookup_layout"] = {"seconds": round(seconds, 3), "cell_updates_per_s": updates / seconds,
                                       "exact": got.answers == [str(int(a) + int(b)) for a, b in
                                                                (line.split("+") for line in e2e_lines)]}
    formulations = {k2: v for k2, v in out.items() if isinstance(v, float) and k2 != "fp32_limit_cell_updates_per_s"}
    best = max(formulations.values())
    out["fastest_formulation"] = max(formulations, key=formulations.get)
    out["end_to_end"]["share_of_fastest"] = round(out["end_to_end"]["cell_updates_per_s"] / best, 3)
    for name, rate in formulations.items():
        say(f"{name}: {rate / 1e9:.2f} G cell-updates/s")
    say(f"end to end, {rows} x 1,000-digit sums: {updates / seconds / 1e9:.2f} G cell-updates/s "
        f"({out['end_to_end']['share_of_fastest']:.0%} of the fastest step), exact: {exact}")
    lookup = out["end_to_end_lookup_layout"]
    lookup["share_of_fastest"] = round(lookup["cell_updates_per_s"] / best, 3)
    say(f"the same in the lookup layout: {lookup['cell_updates_per_s'] / 1e9:.2f} G cell-updates/s, exact: {lookup['exact']}")
    out["ok"] = exact and lookup["exact"]
    return out


def torch_step_rates(x: np.ndarray, k: int, quick: bool) -> dict:
    import torch
    import torch.nn.functional as F
    rule, dev, w = _torch_rule("addition")
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    xt = torch.from_numpy(x).to(dev)
    mask = xt[:, :1]
    state = torch.zeros(x.shape[0], rule.state_channels, x.shape[2], device=dev)

    def step(s):
        h = F.relu(F.conv1d(torch.cat([xt, s], 1), w["w_in"], w["b_in"], padding=1))
        return torch.where(F.conv1d(h, w["w_out"], w["b_out"]) > 0, 1.0, -1.0) * mask

    cells = x.shape[0] * x.shape[2]
    reps = 2 if quick else 8
    out = {}
    s = step(step(state))
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(reps * k):
        s = step(s)
    sync()
    out["torch_eager"] = cells * reps * k / (time.perf_counter() - start)
    if dev == "cuda":
        static = state.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                r = static
                for _ in range(k):
                    r = step(r)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            r = static
            for _ in range(k):
                r = step(r)
        graph.replay()
        sync()
        start = time.perf_counter()
        for _ in range(reps):
            graph.replay()
        sync()
        out["torch_cuda_graph"] = cells * reps * k / (time.perf_counter() - start)
    return out


def window_forms(quick: bool) -> dict:
    """One long tape's tile window (3 tiles and 2 halos of K cells) in each form of the rule,
    K = 256 (the engine's deepest): us a step and the same states as the cl form (the lookup form
    is what `ort` runs where the table is small; bench/window_forms.py). Which runs fastest here?"""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from window_forms import forms, window_codes

    from sead.runtime.model_file import load_step_model
    from sead.runtime.rule import Rule
    k = 64 if quick else 256
    providers = ["CPUExecutionProvider"] if STAND_IN else [("CUDAExecutionProvider", {"use_tf32": 0})]
    out = {"k": k, "window_cells": 5 * k + 1, "models": {}}
    for name in ("addition", "parity", "rule110"):
        got = forms(Rule.from_step(load_step_model(name)), window_codes(name, 5 * k + 1), k, providers, 5 if quick else 20)
        out["models"][name] = got
        say(f"{name} window: " + ", ".join(f"{f} {v['us_per_step']} us/step" if "us_per_step" in v else f"{f} failed"
                                           for f, v in got.items()))
    out["ok"] = all(v.get("same_as_cl", True) for m in out["models"].values() for v in m.values())
    return out


def long_tapes(quick: bool) -> dict:
    """Long tapes in tiles. The 100,000-cell cases run with the engine's default (host: windows
    under HOST_WINDOW_CELLS cells on the CPU provider) and with every window on the GPU in each
    layout (cl: gathers and matrix products; cf: convolutions, fewer kernels a step; lookup, for a
    rule with a step table: one lookup a step; classes: one lookup a block of up to 7 or 9 steps);
    the 1,000,000-cell cases with the fastest on that task."""
    from sead.runtime.model_file import load_step_model
    from sead.runtime.rule import Rule
    from sead.runtime.tasks import get_task
    rng = np.random.default_rng(11)
    n1, n2 = (10_000, 30_000) if quick else (100_000, 1_000_000)
    bits = lambda n: (rng.integers(0, 2, n, dtype=np.uint8) + 48).tobytes().decode()
    out = {"cases": []}

    def case(model: str, label: str, line: str, window_layout: str, steps_expected=None) -> dict:
        task = get_task(model)
        # "host": the engine as it ships (windows under HOST_WINDOW_CELLS cells on the CPU
        # provider, larger ones in its default layout); else every window on the GPU in that layout
        engine = gpu_engine(True) if window_layout == "host" else \
            gpu_engine(True, window_layout=window_layout, host_windows=False)
        with runtime(model, engine) as rt:
            rt.solve([line[:5000] if model == "parity" else "9" * 5000 + "+1"])  # sessions for every K, once
            split = rt.engine if window_layout == "host" else None  # a HostWindows: it counts its calls
            before = (split.host_calls, split.device_calls) if split else (0, 0)
            got, seconds = timed(rt.solve, [line])
            calls = (split.host_calls - before[0], split.device_calls - before[1]) if split else None
        r = got[0]
        entry = {"case": label, "window_layout": window_layout, "seconds": round(seconds, 3), "steps": r.steps,
                 "converged": r.converged, "exact": r.answer == task.answer(task.parse(line)),
                 "steps_expected": steps_expected, "us_per_step": round(seconds / max(r.steps, 1) * 1e6, 2)}
        if calls:  # window and readout calls on the host's CPU and on the GPU
            entry["window_calls"] = {"host": calls[0], "gpu": calls[1]}
        out["cases"].append(entry)
        say(f"{label} ({window_layout} windows): {seconds:.2f} s, {r.steps:,} steps, exact {entry['exact']}")
        save()
        return entry

    chosen = {}
    for model, label, line, expected in (("addition", f"nines {n1:,}", "9" * n1 + "+1", n1),
                                         ("parity", f"parity {n1:,} bits", bits(n1), None)):
        times = {}
        for layout in LONG_LAYOUTS:
            if layout in ("lookup", "classes") and Rule.from_step(load_step_model(model)).step_table(LOOKUP_ENTRIES) is None:
                continue  # no table: the engine has no lookup form for this rule
            if time.perf_counter() < DEADLINE:
                times[layout] = case(model, label, line, layout, expected)["seconds"]
        chosen[model] = min(times, key=times.get) if times else "cl"
    out["window_layout_chosen"] = chosen
    longest = [("addition", f"nines {n2:,}", "9" * n2 + "+1", n2), ("parity", f"parity {n2:,} bits", bits(n2), None)]
    for model, label, line, expected in (longest if LONGEST else []) + [
            ("addition", f"random sum of {10 * n2:,} digits", digit_lines(rng, 1, 10 * n2)[0], None)]:
        if time.perf_counter() > DEADLINE:
            out["cases"].append({"case": label, "skipped": "time budget"})
            continue
        case(model, label, line, chosen[model], expected)
    # the same engines against 'ort' where the CPU reference is quick
    small = [("addition", "9" * 10_000 + "+1"), ("parity", bits(10_000)), ("rule110", bits(20_000) + " 300")]
    out["against_ort"] = []
    for model, line in small:
        with runtime(model, gpu_engine(True)) as g, runtime(model, "ort") as c:
            out["against_ort"].append({"model": model, "cells": len(line), **compare(g.solve([line]), c.solve([line]))})
    out["ok"] = all(c.get("exact", True) for c in out["cases"]) and all(r["identical"] for r in out["against_ort"])
    return out


def product_case(rt, task, line: str) -> dict:
    """One product through `rt`, timed and checked against the oracle (how wrong, if wrong)."""
    got, seconds = timed(rt.solve, [line])
    want = task.answer(task.parse(line))
    answer = got[0].answer or ""
    entry = {"digits": len(line.split("*")[0]), "seconds": round(seconds, 3), "steps": got[0].steps,
             "exact": answer == want}
    if answer != want:  # how wrong: digits that differ, counted from the least significant end
        a, w = answer[::-1], want[::-1]
        wrong = [i for i in range(max(len(a), len(w))) if a[i:i + 1] != w[i:i + 1]]
        entry.update(wrong_digits=len(wrong), first_wrong_digit=wrong[0] if wrong else None,
                     answer_digits=len(answer), want_digits=len(want))
    return entry


def products(quick: bool) -> dict:
    from sead.runtime.tasks import get_task
    from sead.runtime.tasks.base import random_digits
    task = get_task("multiplication")
    rng = np.random.default_rng(5)
    from sead.runtime.model_file import default_model_path, load_step_model
    step = load_step_model(default_model_path("multiplication"))
    weights = sum(int(np.prod(t.dims)) for t in step.proto.graph.initializer)
    out = {"model": f"the shipped multiplication rule ({weights:,} weights, verified size {step.metadata.verified_size:,})",
           "cases": []}
    timed_lines = {}
    with runtime("multiplication", gpu_engine(True), allow_unverified_sizes=True) as rt:
        rt.solve([f"{random_digits(rng, 50)}*{random_digits(rng, 50)}"])  # warm-up
        for digits in ((30, 60) if quick else (200, 400, 1000, 4096)):  # 4,096: 683x the training range
            if time.perf_counter() > DEADLINE:
                out["cases"].append({"digits": digits, "skipped": "time budget"})
                continue
            line = timed_lines[digits] = f"{random_digits(rng, digits)}*{random_digits(rng, digits)}"
            entry = product_case(rt, task, line)
            out["cases"].append(entry)
            say(f"one {digits}-digit product: {entry['seconds']:.2f} s, {entry['steps']} steps, exact {entry['exact']}")
            save()
        lines = [f"{random_digits(rng, 100)}*{random_digits(rng, 100)}" for _ in range(2 if quick else 8)]
        gpu = rt.solve(lines)
    # the same products in the channels-first layout (the CPU's), whose grid prepare is three lookups a
    # cell and whose step is a 3x3 convolution: which layout a GPU should run grids in
    out["cf_layout"] = []
    with runtime("multiplication", gpu_engine(True, layout="cf", window_layout="cf"), allow_unverified_sizes=True) as rt:
        rt.solve([f"{random_digits(rng, 50)}*{random_digits(rng, 50)}"])  # warm-up
        for digits in ((30, 60) if quick else (200, 400)):
            if digits not in timed_lines or time.perf_counter() > DEADLINE:
                continue
            entry = product_case(rt, task, timed_lines[digits])
            out["cf_layout"].append(entry)
            say(f"one {digits}-digit product, cf layout: {entry['seconds']:.2f} s, {entry['steps']} steps, "
                f"exact {entry['exact']}")
    with runtime("multiplication", "ort") as cpu:
        ref, seconds = timed(cpu.solve, lines)
    out["against_ort"] = {"problems": len(lines), "ort_seconds": round(seconds, 2), **compare(gpu, ref),
                          "exact": sum(a == task.answer(task.parse(line)) for a, line in zip(gpu.answers, lines))}
    out["ok"] = (all(c.get("exact", True) for c in out["cases"] + out["cf_layout"])
                 and out["against_ort"]["identical"])
    return out


STAND_IN = False
DEADLINE = 0.0
# --long-layouts: where and how the 100,000-cell tapes' tile windows run, in this order (the budget
# may cut the last): "host", the default (small windows on the CPU provider), then every window on
# the GPU in each layout (class-coded blocks and lookups have not run on a GPU)
LONG_LAYOUTS = ("host", "classes", "lookup", "cl", "cf")
LONGEST = True  # --no-longest: skip the 1,000,000-cell tapes
GRAPH_ROWS = False  # --graph-rows: CUDA graphs for batches of whole problems too (the engine's option)


def main(argv=None) -> int:
    global OUT, STAND_IN, DEADLINE, LONG_LAYOUTS, LONGEST, GRAPH_ROWS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu_check_out"))
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    parser.add_argument("--cpu-stand-in", action="store_true", help="run the ort-cuda rows on the CPU provider")
    parser.add_argument("--budget", type=float, default=330.0, help="no section starts after this many seconds")
    parser.add_argument("--sections", nargs="+",
                        default=["conformance", "short", "file", "step", "long", "products", "windows"])
    parser.add_argument("--long-layouts", nargs="+", default=list(LONG_LAYOUTS), choices=list(LONG_LAYOUTS),
                        help="the tile-window layouts compared on the 100,000-cell tapes")
    parser.add_argument("--no-longest", action="store_true", help="skip the 1,000,000-cell tapes")
    parser.add_argument("--graph-rows", action="store_true", help="CUDA graphs for batches of whole problems too")
    args = parser.parse_args(argv)
    OUT, STAND_IN = args.out, args.cpu_stand_in
    LONG_LAYOUTS, LONGEST, GRAPH_ROWS = tuple(args.long_layouts), not args.no_longest, args.graph_rows
    quick = args.quick or args.cpu_stand_in
    DEADLINE = T0 + args.budget
    import_sead()
    REPORT.update(environment=versions(), quick=quick, cpu_stand_in=STAND_IN, graph_rows=GRAPH_ROWS)
    say(f"environment: {json.dumps(REPORT['environment'])}")
    if not STAND_IN:
        import onnxruntime
        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            REPORT["error"] = "no CUDA provider in onnxruntime"
            save()
            say("no CUDA provider: install onnxruntime-gpu (never together with onnxruntime)")
            return 2
    work = {"conformance": conformance, "short": short_sums, "file": run_file, "step": step_formulations,
            "long": long_tapes, "products": products, "windows": window_forms}
    for name in args.sections:
        section(name, DEADLINE)(work[name])(quick)
    failed = [n for n, s in REPORT["sections"].items() if s.get("failed") or s.get("ok") is False]
    REPORT["exit_status"] = 1 if failed else 0
    save()
    say(f"done: {'all rows identical and exact' if not failed else 'FAILED: ' + ', '.join(failed)}; wrote {OUT / 'gpu_check.json'}")
    return REPORT["exit_status"]


if __name__ == "__main__":
    sys.exit(main())
