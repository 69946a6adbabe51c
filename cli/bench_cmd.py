"""`sead bench`: an engine across tape lengths and batch sizes, beside three baselines run in the
same process (a naive PyTorch loop, a plain ONNX Runtime loop, the rule under torch.compile) and
this machine's roofline. Prints a table; writes JSON and a PNG plot."""
from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path

import typer

from sead.runtime.bench import DEFAULT_SHAPES
from .options import Engine, model_option

BASELINES = ("torch", "ort-loop", "torch-compile")
SHAPES_HELP = "; ".join(f"{'tapes' if rank == 1 else 'grids'} " + ",".join(f"{n}x{b}" for n, b in shapes)
                        for rank, shapes in DEFAULT_SHAPES.items())


def _shapes(text: str) -> list[tuple[int, int]]:
    try:
        pairs = [tuple(int(v) for v in item.lower().split("x")) for item in text.split(",") if item.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected LENGTHxBATCH pairs such as 16x4096, got {text!r}") from None
    if not pairs or any(len(p) != 2 or min(p) < 1 for p in pairs):
        raise typer.BadParameter(f"expected LENGTHxBATCH pairs such as 16x4096, got {text!r}")
    return pairs  # type: ignore[return-value]


def bench(
    model: str = model_option(),
    engine: Engine = typer.Option(Engine.auto),
    shapes: str = typer.Option(None, help="Comma-separated LENGTHxBATCH (cells x problems; default by the "
                               f"model's rank: {SHAPES_HELP})."),
    baselines: str = typer.Option(",".join(BASELINES), help="Baselines to time beside the engine: torch (a naive "
                                  "PyTorch loop), ort-loop (one session.run per step), torch-compile (the rule "
                                  "under torch.compile, K steps per call); '' for none."),
    seconds: float = typer.Option(0.5, help="Minimum timing per measurement."),
    out: Path = typer.Option(Path("bench/out"), help="Folder for bench.json and bench.png."),
) -> None:
    """Throughput (problems/s, cell-updates/s), steps, latency, the naive PyTorch loop and the roofline.

    Example: sead bench --model addition --engine ort --shapes 16x4096,100000x1
    """
    from sead.runtime import bench as b
    from sead.runtime import Runtime
    from sead.runtime.files import Output, check_writable_folder

    chosen = _shapes(shapes) if shapes is not None else None  # usage errors before any work
    baseline_names = _baseline_names(baselines)
    check_writable_folder(out)  # refused now, not after minutes of measuring
    runtime = Runtime(model, engine.value)
    task = runtime.metadata.task
    say = lambda msg: print(msg, file=sys.stderr, flush=True)
    costs = b.model_costs(runtime.step)
    say("measuring this machine's peak FLOP/s and memory bandwidth ...")
    machine = b.measure_machine()
    roof = b.roofline(costs, machine)
    rows, cases = [], []
    for length, count in chosen or b.DEFAULT_SHAPES[runtime.metadata.rank]:
        lines = b.problem_lines(task, length, count)
        say(f"L={length} B={count}: {runtime.engine_name} ...")
        timed = b.time_engine(runtime, lines, seconds)
        cases.append((lines, timed.pop("results")))
        rows.append({"length": length, "batch": count, runtime.engine_name: timed,
                     "fraction_of_roofline": timed["cell_updates_per_s"] / roof["cell_updates_per_s"]})
    lat = b.latency(runtime, b.problem_lines(task, 16, 1)[0])
    # The baselines come after every engine measurement: torch's thread pool and torch.compile's
    # compile workers stay alive once started, and measured beside them the engine lost up to half
    # its throughput on short problems.
    solvers = _baselines(runtime.step, baseline_names, say)
    for row, (lines, results) in zip(rows, cases):
        for name, solve in solvers.items():
            say(f"L={row['length']} B={row['batch']}: baseline {name} ...")
            row[name] = _time_baseline(solve, runtime, lines, results, seconds)
        if solvers:
            best = max(solvers, key=lambda n: row[n]["problems_per_s"])
            row["best_baseline"] = best
            row["speedup_vs_best"] = row[runtime.engine_name]["problems_per_s"] / row[best]["problems_per_s"]
    report = {"model": runtime.step.path, "task": task, "engine": runtime.engine_name, "costs": costs,
              "machine": machine, "roofline": roof, "latency_16_cells": lat, "rows": rows}
    with Output(out / "bench.json") as sink:
        sink.write(json.dumps(report, indent=2))
    typer.echo(_table(report))
    plot = _plot(report, out / "bench.png")
    typer.echo(f"wrote {out / 'bench.json'}" + (f" and {plot}" if plot else " (no plot: pip install matplotlib)"))


def _baseline_names(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = set(names) - set(BASELINES)
    if unknown:
        raise typer.BadParameter(f"unknown baselines {sorted(unknown)}; choose from {', '.join(BASELINES)}")
    return names


def _baselines(step, names: list[str], say) -> dict:
    """name -> solve(parsed, cap) -> (answers, steps), for each baseline this machine can run."""
    solvers = {}
    if "ort-loop" in names:
        from sead.runtime.bench import ort_loop

        solvers["ort_loop"] = ort_loop(step)
    if {"torch", "torch-compile"} & set(names):
        try:
            import torch  # torch-ok: lazy, the bench baselines only

            from sead.train.baseline import CompiledLoop, model_from_onnx, naive_solve
        except ImportError:
            say("PyTorch baselines skipped: torch is not installed (pip install 'sead[train]')")
            return solvers
        torch.set_num_threads(max(1, torch.get_num_threads()))
        model = model_from_onnx(step)
        if "torch" in names:
            solvers["torch_naive"] = lambda parsed, cap: naive_solve(model, parsed, cap)
        if "torch-compile" in names:
            solvers["torch_compile"] = CompiledLoop(model).solve
    return solvers


def _time_baseline(solve, runtime, lines, engine_results, seconds: float) -> dict:
    """Timed like the engine, from problem texts to answers; compile time is in the warm-up."""
    from sead.runtime.bench import cell_updates
    from sead.runtime.loop import Result

    cap = max(runtime.task.step_cap(runtime.task.parse(line)) for line in lines)
    solve([runtime.task.parse(line) for line in lines], cap)  # warm-up (and torch.compile's compile)
    runs, start = 0, time.perf_counter()
    while True:
        answers, steps = solve([runtime.task.parse(line) for line in lines], cap)
        runs += 1
        if time.perf_counter() - start >= seconds:
            break
    elapsed = (time.perf_counter() - start) / runs
    same = all(a == r.answer for a, r in zip(answers, engine_results)) and \
        all(int(s) == r.steps for s, r in zip(steps, engine_results))
    results = [Result(a, int(s), a is not None) for a, s in zip(answers, steps)]
    return {"seconds": elapsed, "problems_per_s": len(lines) / elapsed,
            "cell_updates_per_s": cell_updates(runtime.task.name, lines, results) / elapsed,
            "same_answers_and_steps": same}


NAMES = {"torch_naive": "torch", "ort_loop": "ort-loop", "torch_compile": "compile"}


def _table(report: dict) -> str:
    eng = report["engine"]
    c, m, r = report["costs"], report["machine"], report["roofline"]
    base = [n for n in NAMES if any(n in row for row in report["rows"])]
    lines = [
        f"model {report['task']}: {c['flops_per_cell_update']} FLOPs and {c['bytes_per_cell_update']} bytes per cell-update",
        f"machine: {m['peak_flops'] / 1e9:.1f} GFLOP/s peak, {m['memory_bandwidth'] / 1e9:.1f} GB/s; "
        f"roofline {r['cell_updates_per_s'] / 1e6:.3g} M cell-updates/s ({r['bound']}-bound)",
        f"{'length':>8} {'batch':>6} {'steps':>7} {eng + ' prob/s':>14} {'Mcell-upd/s':>12} {'% roof':>7} "
        + "".join(f"{NAMES[n] + ' prob/s':>16}" for n in base) + (f" {'vs best':>8} {'same':>5}" if base else ""),
    ]
    for row in report["rows"]:
        e = row[eng]
        line = (f"{row['length']:>8} {row['batch']:>6} {e['steps_mean']:>7.1f} {e['problems_per_s']:>14,.0f} "
                f"{e['cell_updates_per_s'] / 1e6:>12.3g} {100 * row['fraction_of_roofline']:>6.1f}% "
                + "".join(f"{row[n]['problems_per_s']:>16,.1f}" for n in base))
        if base:
            same = all(row[n]["same_answers_and_steps"] for n in base)
            line += f" {row['speedup_vs_best']:>7.1f}x {str(same):>5}"
        lines.append(line)
    lat = report["latency_16_cells"]
    lines.append(f"single-problem latency (16 cells): p50 {lat['p50_ms']:.2f} ms, p90 {lat['p90_ms']:.2f} ms, "
                 f"p99 {lat['p99_ms']:.2f} ms")
    return "\n".join(lines)


def _plot(report: dict, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    eng, rows = report["engine"], report["rows"]
    lengths = [r["length"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.loglog(lengths, [r[eng]["cell_updates_per_s"] for r in rows], "o-", label=eng)
    for name, label in (("torch_naive", "naive PyTorch"), ("ort_loop", "plain ONNX Runtime loop"),
                        ("torch_compile", "torch.compile")):
        if all(name in r for r in rows):
            ax1.loglog(lengths, [r[name]["cell_updates_per_s"] for r in rows], "--", marker="s", label=label)
    ax1.axhline(report["roofline"]["cell_updates_per_s"], color="gray", ls=":", label="roofline")
    ax1.set(xlabel="cells per problem", ylabel="cell-updates / s", title="throughput")
    ax1.legend()
    ax2.semilogx(lengths, [r[eng]["steps_mean"] for r in rows], "o-", label="mean")
    ax2.semilogx(lengths, [r[eng]["steps_max"] for r in rows], "^-", label="max")
    ax2.set(xlabel="cells per problem", ylabel="steps", title="steps to the fixed point")
    ax2.legend()
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    from sead.runtime.files import Output

    with Output(path, binary=True) as sink:
        sink.write(png.getvalue())
    return path
