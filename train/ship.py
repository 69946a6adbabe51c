"""Rebuild the shipped default models: `python -m sead.train.ship [TASK ...]`.

Trains each task with its recipe and recorded seed (train/recipes.py), writes the checkpoint and
its verified ONNX export into runtime/models/, and prints the generalization table.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from sead.export.exporter import export_checkpoint
from .checkpoint import save_checkpoint
from .evaluate import evaluate, format_table
from .loop import train
from .recipes import SHIPPED_SEEDS, recipe

MODELS_DIR = Path(__file__).resolve().parent.parent / "runtime" / "models"


def ship(task: str) -> None:
    torch.set_num_threads(1)  # as bench/seeds.py and bench/sweep.py: a seed then gives the same rule everywhere
    model, record = train(recipe(task, seed=SHIPPED_SEEDS[task]))
    rows = evaluate(model, (16, 100, 1000), max_problems=128)
    record["generalization"] = [dict(vars(r)) for r in rows]
    checkpoint = MODELS_DIR / f"{task}.pt"
    save_checkpoint(checkpoint, model, record)
    onnx_path, _ = export_checkpoint(checkpoint)
    print(format_table(rows))
    print(f"wrote {checkpoint} and {onnx_path}")


if __name__ == "__main__":
    for name in sys.argv[1:] or list(SHIPPED_SEEDS):
        ship(name)
