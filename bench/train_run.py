#!/usr/bin/env python3
"""One training experiment: a recipe with some settings changed, from one seed, checked exactly
with bench/seeds.py's plan for its task; the record goes to bench/results/train_RECIPE_NAME_seedK.json.

    python bench/train_run.py multiplication compact --seed 0 [--set polish_rounds=0 wide_hidden=0]
                              [--minutes 12] [--note TEXT] [--save runs/base_seed0.pt]

Settings are TrainConfig fields, their values parsed as JSON where they parse (8000, 0.01, true)
and kept as text otherwise. One torch thread, as bench/seeds.py trains.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from pathlib import Path

import torch

from sead.train.checkpoint import save_checkpoint
from sead.train.loop import train
from sead.train.recipes import recipe
from seeds import PLAN, check  # bench/seeds.py

RESULTS = Path(__file__).resolve().parent / "results"


def setting(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recipe", help="a name in train/recipes.py RECIPES")
    ap.add_argument("name", help="the experiment's name, in its file name")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", nargs="*", default=[], type=setting, metavar="KEY=VALUE", help="TrainConfig changes")
    ap.add_argument("--minutes", type=float, help="the training time limit (default: the recipe's)")
    ap.add_argument("--note", default="", help="what the experiment tried and what it showed")
    ap.add_argument("--save", type=Path, help="keep the trained checkpoint here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = dataclasses.replace(recipe(args.recipe, seed=args.seed, max_minutes=args.minutes), **dict(args.set))
    model, record = train(cfg)
    if args.save:
        save_checkpoint(args.save, model, record)
    rows = check(model, cfg.task, args.seed)
    out = RESULTS / f"train_{args.recipe}_{args.name}_seed{args.seed}.json"
    out.write_text(json.dumps({
        "command": "python bench/train_run.py " + shlex.join(sys.argv[1:]),
        **({"note": args.note} if args.note else {}),
        "parameters": model.num_parameters(),
        "flops_per_cell_update": model.flops_per_cell_update(),
        **{k: record[k] for k in ("steps_done", "seconds", "max_train_cells", "train_config", "history")},
        "generalization": [dict(vars(r)) for r in rows],
    }, indent=1))
    exact = sum(r.exact for r in rows), sum(r.problems for r in rows)
    print(f"{out}: exact on {exact[0]} of {exact[1]} problems of {PLAN[cfg.task][0][1]} to "
          f"{max(length for _, length, _ in PLAN[cfg.task])} digits")


if __name__ == "__main__":
    main()
