#!/usr/bin/env python3
"""Write bench/results/README.md from the JSON files beside it: one section per file, saying what
it measured, which script writes it, and its key figures.

    python bench/results_index.py            # rewrite bench/results/README.md
    python bench/results_index.py --check    # exit 1 if the README.md there is not the script's output

Stdlib and json only, so it runs anywhere. tests/test_docs.py checks that the committed README.md
equals this script's output, so the index never drifts from the files. A file of a shape this
script does not know still gets a section: its top-level keys.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
INDEX = "README.md"

# (file name prefix, script that writes files of that name, what they measure); first match wins
ABOUT = [
    ("addition_bound", "bench/addition_bound.py",
     "Whether each addition rule in the carry code (train/codes.py carry_in) is provably its code's automaton: "
     "every neighbourhood a cell meets, in float64 from the file's weights (the worst margin of each bit) and "
     "in float32 through ONNX Runtime (decisions that differ), and the readout of every column sum and carry "
     "at rest. Positive margins far above rounding everywhere prove the rule exact at every length."),
    ("rule110_bound", "bench/rule110_bound.py",
     "Whether each rule110 rule in the set-value code (train/codes.py set_value) is provably its code's "
     "automaton: every neighbourhood a cell meets, in float64 (the worst margin of each bit) and in float32 "
     "through ONNX Runtime (decisions that differ), and the readout of every bit in either state. Positive "
     "margins far above rounding everywhere prove the rule Rule 110 on every ring for any number of generations."),
    ("activity_rule110", "bench/seeds.py --tasks rule110 --seeds 0",
     "The shipped rule110 rule through the PyTorch reference loop, exact against direct simulation, with its "
     "activity; the last row is every ring of 1 to 14 cells for 60 generations."),
    ("parity_bound", "bench/parity_bound.py",
     "Whether each parity rule in the front code (train/codes.py parity_front) is provably its code's automaton: "
     "every neighbourhood a cell meets, in float64 (the worst margin of each bit) and in float32 through ONNX "
     "Runtime (decisions that differ), and the readout at rest. Positive margins far above rounding everywhere "
     "prove the rule exact at every length."),
    ("agreement_", "bench/agreement.py",
     "The runtime against the PyTorch reference loop of the same shipped models: answers, step counts and "
     "converged flags, and every answer against the task's oracle."),
    ("before_after_", "bench/before_after.py",
     "This runtime against an earlier commit's runtime, both loading the same model files, in fresh processes, "
     "interleaved rounds; best and median of repeated solves."),
    ("bench_", "sead bench",
     "Engine throughput per tape length and batch beside three baselines timed in the same run (a naive "
     "PyTorch loop, a plain ONNX Runtime loop, torch.compile), this machine's roofline and single-problem "
     "latency."),
    ("gpu_check", "bench/gpu_check.py",
     "The GPU acceptance check: ort-cuda against ort and the oracles on every shipped model, then timings."),
    ("load", "bench/load.py",
     "`sead serve` under load over loopback (64 concurrent clients), and the library (Runtime.submit from "
     "64 threads) on the same problems; every answer checked against Python integers."),
    ("ndjson_stream_", "bench/ndjson_stream.py",
     "One NDJSON stream of random 16-digit sums through `sead serve` over loopback (and an earlier commit's "
     "server), against Runtime.solve of the same lines in the client's process; rounds alternate, best of "
     "each; every record checked against Python integers."),
    ("row_batches_", "bench/row_batches.py",
     "Short problems of each task solved at several batch sizes (max_batch_cells), alternating in one run, "
     "best of each, relative to the engine's default; every answer checked against the oracle."),
    ("run_file_", "bench/run_file.py",
     "`sead run` on a file of random 16-digit sums, file to file in fresh processes, against a plain Python "
     "loop over the same file (and an earlier commit's `sead run`), rounds alternating, best of each; "
     "every output compared with the loop's, byte for byte."),
    ("short_sums_", "bench/short_sums.py",
     "200,000 random 16-digit sums through Runtime.solve against a plain Python loop computing the same "
     "answers, rounds interleaved in one run, best of each: their ratio (issue #21's CPU target)."),
    ("margins", "bench/margins.py",
     "The shipped rules' smallest decision margins on the states export's check visits, and how many decisions "
     "the runtime's forms (cf, cl) round differently from the PyTorch step there."),
    ("model_speed_", "bench/model_speed.py",
     "The shipped model against an earlier commit's model of the same task, on one runtime, interleaved "
     "rounds; best of repeated solves."),
    ("multiplication_first_phase_eval128_", "sead eval CKPT --problems 128 --json",
     "A multiplication rule after the recipe's first phase only (no anneal phase), through the PyTorch "
     "reference loop: five families at 6, 12, 24 and 48 digits."),
    ("multiplication_eval128_", "sead eval CKPT --problems 128 --json",
     "A multiplication rule made by the full recipe, through the PyTorch reference loop: five families at "
     "6, 12, 24 and 48 digits."),
    ("multiplication_compact_1000_", "bench/compact_1000.py",
     "One random product of two 1,000-digit numbers through each seed of the compact multiplication recipe: "
     "settled or not, steps, exact against Python's decimal arithmetic."),
    ("multiplication_compact_bound", "bench/compact_bound.py",
     "How far each compact multiplication rule is from provably being its code's automaton: per output bit, "
     "the worst margin over every neighbourhood, bounded tap by tap (> 0 everywhere would prove it)."),
    ("multiplication_1000_", "bench/product_1000.py",
     "One random product of two 1,000-digit numbers (bench/gpu_check.py's) on the CPU engine, against "
     "Python's decimal arithmetic: the same answer, one wrong digit, as on the GPU."),
    ("multiplication_first_phase_sizes_", "bench/multiplication_sizes.py",
     "A first-phase multiplication rule through the runtime at sizes past its training range, exact against "
     "Python's decimal arithmetic."),
    ("multiplication_sizes_", "bench/multiplication_sizes.py",
     "A multiplication rule through the runtime at sizes past its training range, exact against Python's "
     "decimal arithmetic."),
    ("ray", "bench/ray_run.py",
     "`sead run --ray local` on a file of random additions, against a local `sead run` on the same file; "
     "every answer checked."),
    ("seeds_multiplication_first_phase", "bench/seeds.py",
     "The multiplication recipe without its anneal phase, from seeds 0, 1 and 2, through the PyTorch "
     "reference loop."),
    ("seeds_addition_unrolled", "bench/seeds.py --tasks addition_unrolled",
     "The unrolled addition recipe (not shipped; 8 state channels learned by unrolling, no code), "
     "from seeds 0, 1 and 2, each rule checked exactly through the PyTorch reference loop, with its activity."),
    ("seeds_rule110_unrolled", "bench/seeds.py --tasks rule110_unrolled",
     "The unrolled rule110 recipe (not shipped; 8 state channels learned by unrolling, no code), "
     "from seeds 0, 1 and 2, each rule checked exactly through the PyTorch reference loop, with its activity."),
    ("seeds_parity_unrolled", "bench/seeds.py --tasks parity_unrolled",
     "The unrolled parity recipe (not shipped; 8 state channels learned by unrolling, no code), "
     "from seeds 0, 1 and 2, each rule checked exactly through the PyTorch reference loop, with its activity."),
    ("seeds_", "bench/seeds.py",
     "The task's recipe from seeds 0, 1 and 2 (the shipped seed is the shipped model), each rule checked "
     "exactly against the oracle through the PyTorch reference loop, with its activity."),
    ("sweep_", "bench/sweep.py",
     "Cheaper widths of the task's rule, trained from several seeds and screened exactly at short lengths "
     "(stage `screen`), chosen ones confirmed at bench/seeds.py's lengths (stage `confirm`)."),
    ("tiles_sweep_", "bench/tiles.py --sweep",
     "The same problems run in tiles from the first step and as whole rows (dense) at tape lengths "
     "around the tiling threshold."),
    ("host_tiles_", "bench/host_tiles.py",
     "Long tapes through a GPU engine's split (small tile windows on `ort` on the host; the device "
     "engine stood in by the CPU provider) with K up to 128 (128-cell tiles), up to 256 (a bare "
     "ort-cuda engine's) and up to 8 (a bare TrtEngine's): best seconds of alternating rounds and the "
     "calls on each side, every answer the oracle's."),
    ("window_forms_", "bench/window_forms.py",
     "One long tape's tile window of each shipped tape model in each form of the rule (cl, cf, cf with "
     "FusedConv, the whole step as one table lookup, and class-coded blocks of many steps a lookup): "
     "microseconds a step, and whether its states equal the cl form's."),
    ("dense_first_", "bench/tiles.py --dense-first",
     "The runtime as it ships (a long problem's first 32 steps as a whole row, if it fits a batch) "
     "against tiles from the first step (dense_first=0), on the same problems, best of repeated solves."),
    ("tiles_", "bench/tiles.py",
     "Tiled, activity-aware solving against the dense loop in the same run; `work saved` is dense "
     "cell-steps (length x steps) over the cell-steps the engine ran, halos included."),
    ("train_multiplication_seeds", "bench/seeds.py --save",
     "The training record of each multiplication seed of the recipe (first phase, then anneal phase)."),
    ("train_", "a training run (its command is recorded in the file)",
     "One training run of a rule: its configuration, its progress during training, and its generalization "
     "table through the PyTorch reference loop."),
]


# -- formatting ----------------------------------------------------------------------------------
def num(x, digits: int = 3) -> str:
    """A figure as the docs print it: integers with thousands separators, floats to a few
    significant digits, booleans as yes/no, None as a dash."""
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if x != x:
            return "n/a"
        if x == int(x) and abs(x) >= 1000:
            return f"{int(x):,}"
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        return f"{x:.{digits}g}"
    return str(x)


def table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(c if isinstance(c, str) else num(c) for c in row) + " |" for row in rows]
    return out


def frac(a, b) -> str:
    return f"{num(a)}/{num(b)}"


def steps(row: dict) -> str:
    return f"{num(row['steps_mean'])} ({num(row['steps_max'])})"


# -- one summary per shape of file ---------------------------------------------------------------
def eval_rows(rows: list[dict]) -> list[str]:
    activity = "changed_per_step" in rows[0]
    header = ["family", "length", "exact", "fixed point", "steps mean (max)"]
    header += ["changed cells per step", "max changes of a cell", "dense / changed"] if activity else []
    body = []
    for r in rows:
        line = [r["family"], r["length"], frac(r["exact"], r["problems"]), frac(r["converged"], r["problems"]), steps(r)]
        if activity:
            line += [r.get("changed_per_step"), r.get("max_changes"), r.get("dense_per_change")]
        body.append(line)
    wrong = sum(r["problems"] - r["exact"] for r in rows)
    total = sum(r["problems"] for r in rows)
    return [f"Exact on {num(total - wrong)} of {num(total)} problems.", ""] + table(header, body)


def seeds(runs: list[dict]) -> list[str]:
    out = []
    for run in runs:
        rows = run["rows"]
        exact = sum(r["exact"] for r in rows)
        total = sum(r["problems"] for r in rows)
        cost = f", {num(run['flops_per_cell_update'])} FLOPs per cell update" if "flops_per_cell_update" in run else ""
        out.append(f"- seed {run['seed']}: {num(run['parameters'])} parameters{cost}; trained in "
                   f"{num(run['train_seconds'])} s; exact on {num(exact)} of {num(total)} problems, "
                   f"{'every row' if exact == total else 'not every row'}")
    out.append("")
    header = ["family", "length", "problems"] + [f"seed {run['seed']}: exact, steps mean (max)" for run in runs]
    body = []
    for i, r in enumerate(runs[0]["rows"]):
        line = [r["family"], r["length"], r["problems"]]
        for run in runs:
            x = run["rows"][i]
            line.append(f"{frac(x['exact'], x['problems'])}, {steps(x)}")
        body.append(line)
    out += table(header, body)
    if "changed_per_step" in runs[0]["rows"][0]:
        out += ["", "Activity (changed cells per step / most changes of one cell / dense cell-updates per change):", ""]
        header = ["family", "length"] + [f"seed {run['seed']}" for run in runs]
        body = [[r["family"], r["length"]] + [f"{num(run['rows'][i]['changed_per_step'])} / "
                                              f"{num(run['rows'][i]['max_changes'])} / "
                                              f"{num(run['rows'][i]['dense_per_change'])}" for run in runs]
                for i, r in enumerate(runs[0]["rows"])]
        out += table(header, body)
    return out


def sweep(runs: list[dict]) -> list[str]:
    header = ["candidate", "seed", "stage", "hidden", "state channels", "parameters", "FLOPs per cell update",
              "exact on every row", "rows: exact / problems"]
    body = [[r["name"], r["seed"], r["stage"], r["hidden"], r["state_channels"], r["parameters"],
             r["flops_per_cell_update"], r["exact"],
             ", ".join(f"{x['family']} {num(x['length'])}: {frac(x['exact'], x['problems'])}" for x in r["rows"])]
            for r in runs]
    return table(header, body)


def sizes(d: dict) -> list[str]:
    out = [f"Command: `{d['command']}`", "", f"Model `{d['model']}` on engine `{d['engine']}`; its "
           f"sead.verified_size was {num(d['verified_size'])} (0: no limit).", ""]
    body = [[r["digits"], frac(r["exact"], r["problems"]), frac(r["settled"], r["problems"]), steps(r), r["seconds"]]
            for r in d["rows"]]
    return out + table(["operand digits", "exact", "settled", "steps mean (max)", "seconds"], body)


def agreement(rows: list[dict]) -> list[str]:
    same = all(r["same_as_pytorch"] for r in rows)
    exact = all(r["exact"] == r["problems"] for r in rows)
    out = [f"Every row the same as PyTorch: {num(same)}; every answer exact: {num(exact)}.", ""]
    body = [[r["task"], r["cells"], r["problems"], r["same_as_pytorch"], frac(r["exact"], r["problems"]),
             r["steps_max"], r["engine_seconds"], r["reference_seconds"]] for r in rows]
    return out + table(["task", "cells", "problems", "same as PyTorch", "exact", "steps max", "runtime s",
                        "reference s"], body)


def bench(d: dict) -> list[str]:
    c, m, roof, lat = d["costs"], d["machine"], d["roofline"], d["latency_16_cells"]
    out = [f"Model `{d['model']}` ({d['task']}) on engine `{d['engine']}`: {num(c['flops_per_cell_update'])} FLOPs "
           f"and {num(c['bytes_per_cell_update'])} bytes per cell update. Machine: {num(m['peak_flops'] / 1e9)} "
           f"GFLOP/s peak, {num(m['memory_bandwidth'] / 1e9)} GB/s; roofline "
           f"{num(roof['cell_updates_per_s'] / 1e6)} M cell-updates/s ({roof['bound']}-bound). Latency of one "
           f"16-cell problem: p50 {num(lat['p50_ms'])} ms, p90 {num(lat['p90_ms'])} ms, p99 {num(lat['p99_ms'])} ms.",
           ""]
    body = []
    for r in d["rows"]:
        e = r[d["engine"]] if d["engine"] in r else r["ort"]
        base = lambda k: r[k]["problems_per_s"] if k in r else None
        same = all(r[k].get("same_answers_and_steps", True) for k in ("ort_loop", "torch_naive", "torch_compile") if k in r)
        body.append([r["length"], r["batch"], e["steps_mean"], e["problems_per_s"], e["cell_updates_per_s"] / 1e6,
                     f"{100 * r['fraction_of_roofline']:.0f}%", base("torch_naive"), base("ort_loop"),
                     base("torch_compile"), f"{num(r['speedup_vs_best'])}x", same])
    return out + table(["tape cells", "batch", "steps mean", "problems/s", "M cell-updates/s", "of roofline",
                        "naive PyTorch problems/s", "ORT loop problems/s", "torch.compile problems/s",
                        "vs best baseline", "same answers and steps"], body)


def before_after(d: dict) -> list[str]:
    models = f"model `{d['model']}`" if d.get("cases", "addition") == "addition" else "each task's shipped model"
    out = [f"Before: commit {d['base']}; after: commit {d['head']}; {models}; {len(d['rounds'])} "
           f"rounds on {d['cpus']} CPUs.", ""]
    best = lambda v: min(v) if isinstance(v, list) else v  # per round: the best of all rounds
    every = lambda v: all(v) if isinstance(v, list) else v
    body = [[case, best(s["before"]["best"]), best(s["after"]["best"]), s["after_over_before"]["best_of_rounds"],
             s["after_over_before"]["median_of_round_medians"], every(s["before"]["exact"]) and every(s["after"]["exact"])]
            for case, s in d["summary"].items()]
    return out + table(["case", "before: best s", "after: best s", "after / before, best of rounds",
                        "after / before, median of round medians", "exact"], body)


def model_speed(d: dict) -> list[str]:
    base = d["base"]
    costs = ", ".join(f"{k}: {num(v['flops_per_cell_update'])}" for k, v in d["costs"].items())
    out = [f"Task {d['task']}; FLOPs per cell update: {costs}; {d['cpus']} CPUs.", ""]
    body = [[r["case"], min(r["seconds"]["shipped"]), min(r["seconds"][base]), f"{num(r['speedup_best'])}x",
             all(r["exact"].values())] for r in d["rows"]]
    return out + table(["case", "shipped: best s", f"{base}: best s", "speed-up", "both exact"], body)


def tiles(d: dict) -> list[str]:
    out = [f"Engine `{d['engine']}` on {d['machine']}.", ""]
    body, extra = [], []
    for r in d["rows"]:
        if "tiled" not in r:
            extra.append(f"- {r['case']} (target: {r['target']}): exit status {r['exit_status']}, exact "
                         f"{num(r['exact'])}, peak resident {num(r['peak_rss_mb'])} MB, wall {r['wall']}.")
            continue
        t = r["tiled"]
        dense = r.get("dense", {}).get("seconds")
        saved = f"{num(t['work_saved'])}x" if t.get("work_saved") else "-"
        body.append([r["case"], r["target"], t["seconds"], dense, frac(t["exact"], r["problems"]),
                     r.get("same_as_dense", "not run"), saved])
    out += table(["case", "target", "tiled s", "dense s", "exact", "same steps as dense", "work saved"], body)
    return out + ([""] + extra if extra else [])


def tiles_sweep(d: dict) -> list[str]:
    body = [[r["task"], r["length"], r["problems"], r["tiled_seconds"], r["dense_seconds"],
             f"{num(r['dense_over_tiled'])}x", r["same"]] for r in d["sweep"]]
    return [f"Engine `{d['engine']}` on {d['machine']}.", ""] + table(
        ["task", "tape cells", "problems", "tiled s", "dense s", "dense / tiled", "same answers and steps"], body)


def dense_first(d: dict) -> list[str]:
    body = [[r["case"], r["shipped"]["seconds"], r["tiles_first"]["seconds"], f"{num(r['speedup'])}x",
             r["shipped"]["tile_cell_steps"], frac(r["shipped"]["exact"], r["problems"]), r["same"]]
            for r in d["dense_first"]]
    return [f"Engine `{d['engine']}` on {d['machine']}.", ""] + table(
        ["case", "shipped s", "tiles first s", "speedup", "tile cell-steps (shipped)", "exact",
         "same answers and steps"], body)


def window_forms(d: dict) -> list[str]:
    names = list(next(iter(d["models"].values())))
    body = [[model] + [f"{v['us_per_step']} ({'same' if v.get('same_as_cl') else 'DIFFERENT'})" if "us_per_step" in v
                       else "failed" for v in (forms[n] for n in names)] for model, forms in d["models"].items()]
    return [f"{d['provider']} on {d['machine']}; K = {d['k']}, windows of {num(d['window_cells'])} cells; "
            "us a step (states against cl).", ""] + table(["model"] + names, body)


def host_tiles(d: dict) -> list[str]:
    labels = list(d["rows"][0]["seconds"])
    body = [[r["case"], num(r["steps"])] + [f"{r['seconds'][k]} ({num(r['calls'][k]['host'])} host, "
                                             f"{num(r['calls'][k]['device'])} device calls)" for k in labels]
            + [r["ratio_256_to_128"], r["ratio_8_to_128"]] for r in d["rows"]]
    return [f"{d['engine']} on {d['machine']}; best of {d['rounds']} rounds, seconds.", ""] + table(
        ["case", "steps"] + [f"K {k}" for k in labels] + ["256 / 128", "8 / 128"], body)


def load(d: dict) -> list[str]:
    cfg = d["config"]
    out = [f"Machine: {d['machine']['cpus']} CPUs, Python {d['machine']['python']}. {cfg['clients']} clients x "
           f"{cfg['per_request']} {cfg['short_digits']}-digit additions per request, {num(cfg['seconds'])} s per "
           f"load; Load 2 adds {cfg['long_clients']} clients of {num(cfg['long_digits'])}-digit additions.", ""]
    rows = [("Load 1: HTTP", d["load1"]), ("Load 2: HTTP with long additions in flight", d["load2"]),
            (f"library: Runtime.submit from {d['library']['threads']} threads", d["library"])]
    body = [[name, r["problems"], r["problems_per_s"], r["requests_per_s"], r["p50_ms"], r["p99_ms"], r["errors"]]
            for name, r in rows]
    out += table(["load", "problems", "problems/s", "requests/s", "p50 ms", "p99 ms", "errors"], body)
    long = d["load2"]["long"]
    out += ["", f"- Long additions under Load 2: {num(long['problems'])} answered, p50 {num(long['p50_ms'])} ms, "
                f"max {num(long['max_ms'])} ms, {num(long['errors'])} errors.",
            f"- Short p99, Load 2 over Load 1: {num(d['p99_ratio_load2_vs_load1'])}; HTTP over library "
            f"throughput: {num(d['http_vs_library_throughput'])}; server exit status after SIGTERM: "
            f"{d['server_exit_code_after_sigterm']}.",
            "- Checks: " + ", ".join(f"{k} {num(v)}" for k, v in d["checks"].items()) + "."]
    return out


def ray(d: dict) -> list[str]:
    body = [[name, d[name]["answers"], d[name]["exact"], d[name]["exit_code"], d[name]["seconds"]]
            for name in ("ray", "local")]
    return [f"Command: `{d['command']}`; {num(d['lines'])} lines; Ray {d['machine'].get('ray', '?')} on "
            f"{d['machine']['cpus']} CPUs.", ""] + table(["run", "answers", "exact", "exit status", "seconds"], body)


def history_summary(history: list[dict]) -> str:
    acc = [(h.get("step", h.get("step_seen")), h["short_accuracy"]) for h in history if "short_accuracy" in h]
    polished = [h for h in history if "polish_round" in h]
    if polished:  # a coded rule (train/coded.py): wrong bits of one step from random states
        last = polished[-1]
        return (f"after {num(len(polished))} polish rounds, {num(last['fresh_bits_wrong'])} wrong bits of one "
                f"step from fresh random states ({num(last['bits_wrong_in_set'])} in the polish set of "
                f"{num(last['batches'])} batches)")
    if not acc:
        return "no short accuracy recorded"
    best = max(a for _, a in acc)
    first_one = next((s for s, a in acc if a == 1.0), None)
    text = f"short accuracy {num(acc[-1][1])} at step {num(acc[-1][0])} (best {num(best)})"
    return text + (f"; first 1.0 at step {num(first_one)}" if first_one is not None else "")


def train_run(d: dict) -> list[str]:
    cfg = d["train_config"]
    keys = ("state", "hidden", "state_channels", "steps", "lr", "anneal_steps", "anneal_lr", "read_digits", "code",
            "wide_hidden", "nuclear_weight", "narrow_lr", "polish_rounds")
    keys = [k for k in keys if k in cfg and cfg[k] not in ("", None)
            and not (k == "state_channels" and (cfg.get("state") == "symbol" or cfg.get("code")))]
    config = ", ".join(f"{k} {cfg[k]}" for k in keys)  # (a symbol state has one channel per class)
    out = [f"Command: `{d['command']}`" + (f" (commit {d['commit']})" if "commit" in d else ""), ""]
    if "note" in d:
        out += [f"Note: {d['note']}", ""]
    out += [f"- {num(d['parameters'])} parameters, {num(d['flops_per_cell_update'])} FLOPs per cell update; "
            f"{num(d['steps_done'])} optimizer steps in {num(d['seconds'])} s; {config}.",
            f"- {history_summary(d['history'])}.", "", "Generalization:", ""]
    return out + eval_rows(d["generalization"])


def train_seeds(d: dict) -> list[str]:
    out = [f"Command: `{d['command']}`", ""]
    body = [[r["seed"], r["steps_done"], r["seconds"], history_summary(r["history"])] for r in d["runs"]]
    return out + table(["seed", "optimizer steps", "seconds", "short accuracy"], body)


def gpu_check(d: dict) -> list[str]:
    env = d.get("environment", {})
    out = [f"GPU: {env.get('gpu', '?')}; {env.get('onnxruntime', '?')}; Python {env.get('python', '?')}; quick "
           f"{num(d.get('quick'))}; CPU stand-in {num(d.get('cpu_stand_in'))}; exit status "
           f"{num(d.get('exit_status'))}; {num(d.get('seconds'))} s.", ""]
    body = []
    for name, s in d.get("sections", {}).items():
        state = "failed" if s.get("failed") else "skipped" if s.get("skipped") else \
            {True: "ok", False: "not ok"}.get(s.get("ok"), "done")
        scalars = ", ".join(f"{k} {num(v)}" for k, v in s.items() if isinstance(v, (int, float, str))
                            and k not in ("ok", "section_seconds", "trace", "failed", "skipped"))[:300]
        body.append([name, state, s.get("section_seconds"), s.get("failed") or scalars or "-"])
    return out + table(["section", "result", "seconds", "figures"], body)


def row_batches(d: dict) -> list[str]:
    sizes = list(d["cases"][0]["seconds"])
    rows = [[c["task"], num(c["size"]), num(c["problems"])] +
            [f"{c['seconds'][k]} s ({c['relative_to_default'][k]}x)" for k in sizes] for c in d["cases"]]
    return [f"Engine `{d['engine']}` on {d['machine']}; default {num(d['cases'][0]['default_cells'])} cells.", ""] + \
        table(["task", "size", "problems"] + [f"{num(int(k))} cells" for k in sizes], rows)


def run_file(d: dict) -> list[str]:
    rows = [[name, f"{seconds} s", f"{d['ratio_to_loop'][name]}x"] for name, seconds in d["seconds"].items()]
    return [f"{num(d['problems'])} sums of {d['digits']}-digit numbers on {d['machine']}; exact: {d['exact']}.", ""] + \
        table(["contender", "seconds (best)", "to the loop"], rows)


def ndjson_stream(d: dict) -> list[str]:
    rows = [[name, f"{seconds} s", f"{d['ratio_to_library'][name]}x"] for name, seconds in d["seconds"].items()]
    return [f"{num(d['problems'])} sums of {d['digits']}-digit numbers in one stream on {d['machine']}; "
            f"exact: {d['exact']}.", ""] + table(["contender", "seconds (best)", "to the library"], rows)


def code_bound(d: dict) -> list[str]:
    bits = list(d["models"][0]["met"]["worst_margin"])
    out = [f"Command: `{d['command']}`", "",
           "| model | neighbourhoods met | " + " | ".join(f"worst margin: {b}" for b in bits)
           + " | decisions differing (float32) | readout wrong | exact at every length |",
           "|---|---|" + "---|" * len(bits) + "---|---|---|"]
    for m in d["models"]:
        met = m["met"]
        out.append(f"| {Path(m['model']).name} | {num(met['neighbourhoods'])} | "
                   + " | ".join(num(met["worst_margin"][b]) for b in bits)
                   + f" | {num(met['decisions_differing_float32_onnxruntime'])} "
                   f"| {num(m['readout']['wrong'])} of {num(m['readout']['cells_at_rest'])} "
                   f"| {'yes' if m['exact_at_every_length'] else 'no'} |")
    return out


def unknown(d) -> list[str]:
    if isinstance(d, dict):
        return ["Top-level keys: " + ", ".join(f"`{k}`" for k in d) + "."]
    return [f"A list of {len(d)} records."]


def summarize(name: str, d) -> list[str]:
    """The key figures of one file, by its shape."""
    if isinstance(d, list) and d and isinstance(d[0], dict):
        first = d[0]
        if "stage" in first and "name" in first:
            return sweep(d)
        if "rows" in first and "seed" in first:
            return seeds(d)
        if "same_as_pytorch" in first:
            return agreement(d)
        if "family" in first and "length" in first:
            return eval_rows(d)
    if isinstance(d, dict):
        if "sections" in d:
            return gpu_check(d)
        if "window_cells" in d:
            return window_forms(d)
        if "rows" in d and d["rows"] and "ratio_256_to_128" in d["rows"][0]:
            return host_tiles(d)
        if "models" in d and d["models"] and "met" in d["models"][0]:
            return code_bound(d)
        if "cases" in d and d["cases"] and "relative_to_default" in d["cases"][0]:
            return row_batches(d)
        if "ratio_to_loop" in d:
            return run_file(d)
        if "ratio_to_library" in d:
            return ndjson_stream(d)
        if "roofline" in d:
            return bench(d)
        if "summary" in d and "base" in d:
            return before_after(d)
        if "costs" in d and "rows" in d:
            return model_speed(d)
        if "sweep" in d:
            return tiles_sweep(d)
        if "dense_first" in d:
            return dense_first(d)
        if "rows" in d and d["rows"] and "tiled" in d["rows"][0]:
            return tiles(d)
        if "rows" in d and d["rows"] and "digits" in d["rows"][0]:
            return sizes(d)
        if "load1" in d:
            return load(d)
        if "ray" in d and "local" in d:
            return ray(d)
        if "runs" in d:
            return train_seeds(d)
        if "train_config" in d:
            return train_run(d)
    return unknown(d)


def about(name: str) -> tuple[str, str]:
    for prefix, script, what in ABOUT:
        if name.startswith(prefix):
            return script, what
    return "not recorded", "Not described by bench/results_index.py yet."


def render(folder: Path = RESULTS) -> str:
    files = sorted(folder.glob("*.json"))
    others = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix != ".json" and p.name != INDEX)
    out = ["# bench/results", "",
           "Generated by `python bench/results_index.py` from the JSON files in this folder: do not edit it by hand",
           "(tests/test_docs.py checks that it equals the script's output). One section per file: what it",
           "measured, what writes it, and its key figures. Times are wall clock on the machine named in each",
           "file or, where none is named, this project's 2-core x86-64 development machine; compare ratios",
           "within one file, not across files.", ""]
    out += ["| file | written by |", "|---|---|"]
    out += [f"| [{p.name}](#{anchor(p.name)}) | {about(p.name)[0]} |" for p in files]
    if others:
        out += ["", "Other files: " + ", ".join(f"`{n}`" for n in others) + " (plots of the JSON file of the same name)."]
    for p in files:
        script, what = about(p.name)
        data = json.loads(p.read_text())
        out += ["", f"## {p.name}", "", f"{what} Written by: {script}.", ""]
        out += summarize(p.name, data)
    return "\n".join(out) + "\n"


def anchor(name: str) -> str:
    """GitHub's heading anchor for a file name: lower case, dots dropped, spaces to dashes."""
    return "".join(c for c in name.lower() if c.isalnum() or c in "-_ ").replace(" ", "-")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md differs from the output")
    args = parser.parse_args(argv)
    text, target = render(), RESULTS / INDEX
    if args.check:
        same = target.is_file() and target.read_text() == text
        print(f"{target}: {'up to date' if same else 'differs: run python bench/results_index.py'}")
        return 0 if same else 1
    target.write_text(text)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
