"""Rebuild the shipped default models: `python -m sead.export.ship [TASK ...]` (`make models`).

Trains each task with its recipe and recorded seed (train/recipes.py), writes the checkpoint and
its verified ONNX export into runtime/models/, and prints the generalization table (the task's
`sead eval` sizes). A model wrong anywhere in that table ships with a size limit (verified_size).
One torch thread, as bench/seeds.py's default, so a seed gives the same rule there; `--threads N`
for a run made with N (multiplication's seeds ran with 2).
`--trained CKPT` ships a checkpoint that `bench/seeds.py --save` already trained from the
shipped seed, instead of training it again; `--verified-size N` ships it with the size limit that
checks beyond the table (bench/multiplication_sizes.py) found it exact up to.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from sead.runtime.model_file import default_model_path
from sead.runtime.tasks import get_task
from sead.train.checkpoint import load_checkpoint, save_checkpoint
from sead.train.evaluate import evaluate, format_table
from sead.train.loop import train
from sead.train.recipes import SHIPPED_SEEDS, recipe
from .exporter import export_checkpoint


def ship(task: str, threads: int = 1, trained: Path | None = None, claim: int | None = None) -> None:
    """trained: a checkpoint the recipe already made from the shipped seed (bench/seeds.py --save).
    claim: the verified size to ship with, the largest size that checks beyond this table (named in
    docs/grids.md) found exact; refused above a size where this table found the model wrong."""
    torch.set_num_threads(threads)  # as bench/seeds.py and bench/sweep.py: a seed then gives the same rule everywhere
    if trained is None:
        model, record = train(recipe(task, seed=SHIPPED_SEEDS[task]))
    else:
        model, payload = load_checkpoint(trained)
        record = payload["record"]
        made = record["train_config"]
        if (made["task"], made["seed"]) != (task, SHIPPED_SEEDS[task]):
            raise SystemExit(f"{trained}: trained for {made['task']} from seed {made['seed']}, "
                             f"not {task} from seed {SHIPPED_SEEDS[task]}")
    rows = evaluate(model, get_task(task).eval_sizes, max_problems=128)
    record["generalization"] = [dict(vars(r)) for r in rows]
    rank = get_task(task).rank
    record["verified_size"] = verified_size(rows, rank)
    if claim is not None:
        found = verified_size(rows)  # 0: exact on every row, so a claim past the table rests on checks beyond it
        if claim < 1:
            raise SystemExit(f"--verified-size {claim}: a size limit is at least 1 (ship without it for none)")
        if found and claim > found:
            raise SystemExit(f"--verified-size {claim}: this check found {task} exact up to size {found} only")
        record["verified_size"] = claim
    checkpoint = default_model_path(task, ".pt")
    save_checkpoint(checkpoint, model, record)
    onnx_path, _ = export_checkpoint(checkpoint)
    print(format_table(rows))
    print(f"wrote {checkpoint} and {onnx_path}")


def verified_size(rows, rank: int = 1) -> int:
    """The size the shipped model claims: the largest size checked below the first size with a
    wrong or unsettled answer. Exact on every problem checked: a tape rule (rank 1) claims no limit
    (0), as tape rules hold at any length (bench/seeds.py and `pytest -m slow` take them to a
    million cells); a grid rule claims the largest size checked, never more (a grid rule's reach is
    finite: two of the three seeds of the multiplication recipe never settle on one 1,000-digit product).
    Nothing exact: no ship."""
    bad = [r.length for r in rows if r.exact < r.problems]
    if not bad:
        return 0 if rank == 1 else max(r.length for r in rows)
    exact = [r.length for r in rows if r.length < min(bad)]
    if not exact:
        raise SystemExit(f"not exact at the smallest size checked ({min(bad)}): nothing to ship")
    return max(exact)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tasks", nargs="*", default=list(SHIPPED_SEEDS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--trained", type=Path, help="ship this checkpoint (one task) instead of training it again")
    ap.add_argument("--verified-size", type=int, help="ship with this size limit (one task): the largest size "
                    "its checks found exact")
    args = ap.parse_args()
    if (args.trained or args.verified_size is not None) and len(args.tasks) != 1:
        ap.error("--trained and --verified-size ship one task: name that task")
    for name in args.tasks:
        ship(name, args.threads, args.trained, args.verified_size)
