#!/usr/bin/env python3
"""How cheap can a rule be? Train candidate widths of a task from several seeds, screen each rule
exactly at short lengths, and confirm chosen candidates with bench/seeds.py's plan.

    python bench/sweep.py TASK screen [NAME ...] [--seeds 0 1 2]
    python bench/sweep.py TASK confirm NAME ... [--seeds 0 1 2]
    python bench/sweep.py TASK table

Cost is FLOPs per cell update: 2 x hidden x (input + state channels) x 3 + 2 x state channels x
hidden (the readout runs once per solve). Every result is appended to bench/results/sweep_TASK.json
as soon as it exists (a run can be resumed: finished (candidate, seed, stage) triples are skipped);
trained rules are kept in bench/out/sweep/ for the confirm step. Exactness is against the exact
oracles, through the PyTorch reference loop, with one torch thread.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from sead.train.checkpoint import load_checkpoint, save_checkpoint
from sead.train.evaluate import evaluate_lines, family_lines
from sead.train.loop import train
from sead.train.recipes import RECIPES
from seeds import PLAN, check  # bench/seeds.py: the long-length plan that the shipped models pass

MODELS = Path("bench/out/sweep")
SCREEN = {
    "addition": [("random", 16, 512), ("random", 100, 256), ("random", 1000, 64), ("mixed_lengths", 1000, 64),
                 ("carry_chain", 200, 4)],
    "rule110": PLAN["rule110"],  # already cheap: the whole plan
}
# task -> candidate name -> TrainConfig changes from the task's recipe
CANDIDATES = {
    "addition": {
        "h64_s8": {"hidden": 64},  # a wide reference point
        "h32_s8": {"hidden": 32},
        "h16_s8": {"hidden": 16},
        "h16_s4": {"hidden": 16, "state_channels": 4},
        "h16_s2": {"hidden": 16, "state_channels": 2},
        "h12_s8": {"hidden": 12},
        "h12_s4": {"hidden": 12, "state_channels": 4},
        "h8_s4": {"hidden": 8, "state_channels": 4},
        "h16_s4_long": {"hidden": 16, "state_channels": 4, "steps": 4000},
        "h12_s4_long": {"hidden": 12, "state_channels": 4, "steps": 4000},
        "h8_s4_long": {"hidden": 8, "state_channels": 4, "steps": 4000},
    },
    "rule110": {
        "h32_s8": {},  # rule110_unrolled unchanged, for reference
        "h16_s4": {"hidden": 16, "state_channels": 4},
        "h8_s2": {"hidden": 8, "state_channels": 2},
        "h8_s1": {"hidden": 8, "state_channels": 1},
    },
}


def results_path(task: str) -> Path:
    return Path(f"bench/results/sweep_{task}.json")


# the recipe each task's candidates change: the unrolled rules (a coded rule's width is fixed by its code)
SWEPT = {"addition": "addition_unrolled", "rule110": "rule110_unrolled"}


def config(task: str, name: str, seed: int):
    return dataclasses.replace(RECIPES[SWEPT[task]], seed=seed, max_minutes=60, **CANDIDATES[task][name])


def load_results(task: str) -> list[dict]:
    path = results_path(task)
    return json.loads(path.read_text()) if path.is_file() else []


def save_result(task: str, entry: dict) -> None:
    key = lambda r: (r["name"], r["seed"], r["stage"])
    results = [r for r in load_results(task) if key(r) != key(entry)]
    results_path(task).write_text(json.dumps(results + [entry], indent=1))


def checkpoint_path(task: str, name: str, seed: int) -> Path:
    return MODELS / f"{task}_{name}_seed{seed}.pt"


def screen(task: str, name: str, seed: int) -> dict:
    model, record = train(config(task, name, seed), log=False)
    MODELS.mkdir(parents=True, exist_ok=True)
    save_checkpoint(checkpoint_path(task, name, seed), model, record)
    rng = np.random.default_rng(1000 + seed)
    rows = [evaluate_lines(model, family_lines(task, f, n, c, rng)).row(task, f, n) for f, n, c in SCREEN[task]]
    return entry(task, name, seed, "screen", model, record, rows)


def entry(task, name, seed, stage, model, record, rows) -> dict:
    cfg = config(task, name, seed)
    return {"name": name, "seed": seed, "stage": stage, "hidden": cfg.hidden, "state_channels": cfg.state_channels,
            "readout_hidden": cfg.readout_hidden, "changes": CANDIDATES[task][name], "parameters": model.num_parameters(),
            "flops_per_cell_update": model.flops_per_cell_update(), "train_seconds": record["seconds"],
            "steps_done": record["steps_done"], "exact": all(r.exact == r.problems for r in rows),
            "rows": [dict(vars(r)) for r in rows]}


def confirm(task: str, name: str, seed: int) -> dict:
    model, payload = load_checkpoint(checkpoint_path(task, name, seed))
    return entry(task, name, seed, "confirm", model, payload["record"], check(model, task, seed))


def table(task: str) -> str:
    """Markdown: per stage, one line per candidate; exact answers per row summed over its seeds."""
    results = load_results(task)
    out = []
    for stage in ("screen", "confirm"):
        got = {name: sorted((r for r in results if r["name"] == name and r["stage"] == stage), key=lambda r: r["seed"])
               for name in CANDIDATES[task]}
        got = {name: rs for name, rs in got.items() if rs}
        if not got:
            continue
        keys = [(w["family"], w["length"]) for w in next(iter(got.values()))[0]["rows"]]
        out += [f"{stage}:", "",
                "| candidate | hidden | state ch. | parameters | FLOPs / cell update | seeds exact | "
                + " | ".join(f"{f} {n:,}" for f, n in keys) + " | train s (per seed) | max changes | changed cells per step (longest random row) |",
                "|---" * (9 + len(keys)) + "|"]
        for name, rs in got.items():
            rows = [{(w["family"], w["length"]): w for w in r["rows"]} for r in rs]
            exact = [f"{sum(x[k]['exact'] for x in rows)}/{sum(x[k]['problems'] for x in rows)}" for k in keys]
            longest = max(k for k in keys if k[0] == "random")
            changed = ", ".join(f"{x[longest]['changed_per_step']:,.1f}" for x in rows)
            g = rs[0]
            out.append(f"| {name} | {g['hidden']} | {g['state_channels']} | {g['parameters']:,} | "
                       f"{g['flops_per_cell_update']:,} | {sum(r['exact'] for r in rs)}/{len(rs)} (seeds "
                       f"{', '.join(str(r['seed']) for r in rs)}) | " + " | ".join(exact) + " | "
                       f"{', '.join(str(round(r['train_seconds'])) for r in rs)} | "
                       f"{max(w['max_changes'] for x in rows for w in x.values())} | "
                       f"{changed} |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task", choices=list(CANDIDATES))
    ap.add_argument("stage", choices=["screen", "confirm", "table"])
    ap.add_argument("names", nargs="*", help="candidates (default: all, for screen)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = ap.parse_args()
    torch.set_num_threads(1)
    task = args.task
    if args.stage == "table":
        print(table(task))
        return
    done = {(r["name"], r["seed"], r["stage"]) for r in load_results(task)}
    for name in args.names or list(CANDIDATES[task]):
        for seed in args.seeds:
            if (name, seed, args.stage) in done:
                continue
            start = time.time()
            result = screen(task, name, seed) if args.stage == "screen" else confirm(task, name, seed)
            save_result(task, result)
            print(f"{name} seed {seed} {args.stage}: exact={result['exact']} flops={result['flops_per_cell_update']} "
                  f"train {result['train_seconds']} s, {time.time() - start:.0f} s in all", flush=True)
    print(table(task))


if __name__ == "__main__":
    main()
