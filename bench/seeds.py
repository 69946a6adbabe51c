#!/usr/bin/env python3
"""Does the recipe work from every seed? Train each task from seeds 0, 1, 2 and check each rule
exactly at long lengths against the oracles (Python integers / decimal, counts, direct simulation).

    python bench/seeds.py [--tasks addition parity rule110 multiplication] [--seeds 0 1 2] [--minutes 15]
                          [--out bench/out/seeds.json]
    python bench/seeds.py --tasks multiplication_symbol            # a recipe of another name: its task's plan
    python bench/seeds.py --markdown bench/results/seeds_parity.json     # the tables of docs/models-and-recipes.md

Each row also gives the rule's activity: changed cells per step, the most changes of any one cell
and dense cell-updates (cells x steps) per changed-cell event.

The shipped seed (train/recipes.py SHIPPED_SEEDS: 0, or 1 for multiplication) is the shipped
model (runtime/models/TASK.pt, made by the same recipe) unless --retrain. --minutes caps each
seed's training (the recipe's limit by default). --first-phase DIR continues checkpoints a recipe
without its anneal phase made (the same rule as training from scratch, in a third of the time).
Lengths are those issues 3 and 14 ask for; problems run through the PyTorch reference loop with the
default step cap (2 x diameter + 16), so a rule that stops settling shows up as not converged.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from sead.runtime.model_file import default_model_path
from sead.runtime.tasks import get_task
from sead.train.checkpoint import load_checkpoint, save_checkpoint
from sead.train.evaluate import EvalRow, evaluate_lines, family_lines, format_table
from sead.train.loop import train
from sead.train.recipes import RECIPES, SHIPPED_SEEDS, recipe

# (family, length, problems)
PLAN = {
    "addition": [("random", 16, 512), ("random", 100, 256), ("random", 1000, 64), ("random", 10_000, 16),
                 ("random", 100_000, 4), ("random", 1_000_000, 1), ("mixed_lengths", 1000, 64),
                 ("mixed_lengths", 100_000, 2), ("carry_chain", 200, 4), ("carry_chain", 10_000, 1)],
    "parity": [("random", 16, 512), ("random", 100, 256), ("random", 1000, 64), ("random", 3000, 8), ("random", 10_000, 8),
               ("all_zero", 10_000, 1), ("single_one", 10_000, 3)],
    # random rings run 1, 100 and 1000 generations; all_rings: every ring of 1 to 14 cells, 60 generations
    "rule110": [("random", 16, 96), ("random", 10_000, 3), ("all_rings", 14, 0)],
    # issue 14: trained on operands of at most 6 digits, checked at 6, 12, 24 and 48
    "multiplication": [("random", 6, 256), ("random", 12, 64), ("random", 24, 16), ("random", 48, 4),
                       ("unequal", 12, 32), ("unequal", 48, 4), ("zeros", 48, 2), ("all_nines", 6, 2),
                       ("all_nines", 48, 2), ("powers_of_ten", 48, 2)],
}


def check(model, task: str, seed: int) -> list[EvalRow]:
    rng = np.random.default_rng(1000 + seed)
    rows = []
    for family, length, count in PLAN[task]:
        lines = family_lines(task, family, length, count, rng)
        start = time.time()
        r = evaluate_lines(model, lines).row(task, family, length)
        rows.append(r)
        print(f"  seed {seed} {task} {family} L={length}: {r.exact}/{r.problems} exact, {r.converged} converged, "
              f"steps mean {r.steps_mean:.1f} max {r.steps_max}, changed/step {r.changed_per_step:.1f}, "
              f"max changes {r.max_changes}, dense/changed {r.dense_per_change:.1f} ({time.time() - start:.0f} s)",
              flush=True)
    return rows


def markdown(report: list[dict]) -> str:
    """A task's results as two markdown tables: exactness and steps, then activity."""
    seeds = sorted({r["seed"] for r in report})
    first = report[0]
    times = ", ".join(f"seed {r['seed']}: {r['train_seconds']:.0f} s" for r in report)
    flops = f"; {first['flops_per_cell_update']:,} FLOPs per cell update" if "flops_per_cell_update" in first else ""
    name = first.get("recipe", first["task"])
    out = [f"**{name}** ({first['parameters']:,} parameters{flops}; train time {times})", ""]
    for title, cell in (("exact / fixed point / steps mean (max)", _exact_cell),
                        ("changed cells per step / max changes of a cell / dense ÷ changed", _activity_cell)):
        out += ["| family | length | problems | " + " | ".join(f"seed {s}: {title}" for s in seeds) + " |",
                "|---|---|---|" + "---|" * len(seeds)]
        for i, row in enumerate(first["rows"]):
            cells = [cell(r["rows"][i]) for r in sorted(report, key=lambda r: r["seed"])]
            out.append(f"| {row['family']} | {row['length']:,} | {row['problems']:,} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def _exact_cell(row: dict) -> str:
    fixed = "n/a" if get_task(row["task"]).convergence == "generations" else f"{row['converged']}/{row['problems']}"
    return f"{row['exact']}/{row['problems']} / {fixed} / {row['steps_mean']:.1f} ({row['steps_max']})"


def _activity_cell(row: dict) -> str:
    if "max_changes" not in row:  # a row without activity fields
        return "n/a"
    return f"{row['changed_per_step']:,.1f} / {row['max_changes']} / {row['dense_per_change']:,.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=list(PLAN), help="tasks or recipe names (train/recipes.py)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--retrain", action="store_true", help="train the shipped seed too instead of loading the shipped model")
    ap.add_argument("--out", type=Path, default=Path("bench/out/seeds.json"))
    ap.add_argument("--markdown", type=Path, help="print a results file as markdown tables and exit")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1, as export/ship.py: the same rule from a seed)")
    ap.add_argument("--minutes", type=float, help="each seed's training time limit (default: the recipe's)")
    ap.add_argument("--save", type=Path, help="a folder to keep each trained seed's checkpoint in (TASK_seedN.pt)")
    ap.add_argument("--first-phase", type=Path, help="a folder of checkpoints (TASK_seedN.pt) that --save kept from "
                    "the recipe's first phase: only its anneal phase runs on them (train/loop.py train)")
    args = ap.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return
    torch.set_num_threads(args.threads)
    report = []
    for name in args.tasks:
        task = RECIPES[name].task if name in RECIPES else name
        for seed in args.seeds:
            shipped = default_model_path(task, ".pt")
            if name == task and seed == SHIPPED_SEEDS.get(task) and not args.retrain and shipped.is_file():
                model, payload = load_checkpoint(shipped)
                record = payload["record"]
            else:
                limit = {} if args.minutes is None else {"max_minutes": args.minutes}
                kept = args.first_phase / f"{name}_seed{seed}.pt" if args.first_phase else None
                first = load_checkpoint(kept) if kept and kept.is_file() else None
                model, record = train(recipe(name, seed=seed, **limit),
                                      first_phase=(first[0], first[1]["record"]) if first else None)
                if args.save:
                    save_checkpoint(args.save / f"{name}_seed{seed}.pt", model, record)
            print(f"{name} seed {seed}: {model.num_parameters()} parameters, trained {record['seconds']} s "
                  f"({record['steps_done']} steps)", flush=True)
            rows = check(model, task, seed)
            print(format_table(rows), flush=True)
            report.append({"task": task, **({"recipe": name} if name != task else {}), "seed": seed, "train_seconds": record["seconds"],
                           "parameters": model.num_parameters(), "flops_per_cell_update": model.flops_per_cell_update(),
                           "rows": [dict(vars(r)) for r in rows]})
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=1))
    bad = [(r.get("recipe", r["task"]), r["seed"]) for r in report if any(row["exact"] < row["problems"] for row in r["rows"])]
    print("every seed exact on every row" if not bad else f"NOT exact: {bad}")


if __name__ == "__main__":
    main()
