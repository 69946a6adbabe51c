"""`sead train`, `sead export`, `sead inspect`, `sead eval`: the model's life before serving."""
from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer

from sead.runtime.errors import SeadError
from sead.runtime.tasks import MAX_STEPS, TASKS, get_task
from .main import app
from .run_cmd import plural

TaskName = Enum("TaskName", {name: name for name in TASKS}, type=str)  # the registry's tasks, as choices


def _need_torch(command: str) -> None:
    try:
        import torch  # noqa: F401  # torch-ok: lazy, only to say it is missing
    except ImportError:
        raise SeadError(f"sead {command} needs PyTorch: pip install -c constraints.txt 'sead[train]'") from None


def _lengths(text: str) -> list[int]:
    try:
        values = [int(v.replace("_", "")) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise typer.BadParameter("lengths must be positive")
    return values


@app.command()
def train(
    task: TaskName = typer.Argument(..., help=f"The task: {', '.join(TASKS)}."),
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint file to write."),
    seed: int = typer.Option(0, help="Random seed; training is deterministic for a seed."),
    steps: int = typer.Option(None, min=1, help="Optimizer steps (default: the task's recipe; a recipe's anneal "
                              "phase keeps its share of them)."),
    minutes: float = typer.Option(None, min=0.01, help="Stop early after this many minutes (default: the task's "
                                  "recipe: 15, multiplication 55)."),
    lengths: str = typer.Option(None, help="Sizes of the generalization table printed at the end "
                                "(default: the task's, e.g. 16,100,1000 digits for addition)."),
) -> None:
    """Train a SEAD rule on tapes of at most 16 cells and write a one-file checkpoint.

    Example: sead train parity --out parity.pt --seed 1
    """
    _need_torch("train")
    from sead.runtime.files import Output
    from sead.train.checkpoint import checkpoint_bytes
    from sead.train.evaluate import evaluate, format_table
    from sead.train.loop import train as run_training
    from sead.train.recipes import recipe

    cfg = recipe(task.value, seed=seed, steps=steps, max_minutes=minutes)
    table_lengths = _lengths(lengths) if lengths else list(get_task(task.value).eval_sizes)
    with Output(out, binary=True) as sink:  # an unwritable --out is refused before training, not after
        model, record = run_training(cfg)
        rows = evaluate(model, table_lengths, max_problems=64)
        record["generalization"] = [dict(vars(r)) for r in rows]
        sink.write(checkpoint_bytes(model, record))
    typer.echo(format_table(rows))
    typer.echo(f"wrote {out} ({model.num_parameters()} parameters, {plural(record['steps_done'], 'step')}, "
               f"{record['seconds']} s)")


@app.command()
def export(
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by `sead train`."),
    output: Path = typer.Option(None, "--output", "-o", help="Default: the checkpoint's path with .onnx."),
    opset: int = typer.Option(17, help="ONNX opset (17..21)."),
) -> None:
    """Write ONE step of the model as ONNX and verify it against PyTorch.

    Example: sead export addition.pt -o addition.onnx
    """
    from sead.runtime.files import refuse_same_file

    refuse_same_file(str(output or checkpoint.with_suffix(".onnx")), {"checkpoint": str(checkpoint)})  # before torch loads
    _need_torch("export")
    from sead.export.exporter import export_checkpoint

    path, report = export_checkpoint(checkpoint, output, opset)
    flips = sum(r.get("rounding_flips", 0) for r in report)
    worst = max((r.get("max_logit_error", 0.0) for r in report), default=0.0)
    typer.echo(f"wrote {path}: verified against PyTorch in {len(report)} checks "
               f"(lengths 1 to 100,000; state values flipped by rounding: {flips}; max logit error {worst:.2g})")


@app.command()
def inspect(
    model: str = typer.Argument(..., help="An .onnx file or a shipped model name."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Print a model's metadata, inputs and outputs, operators and parameter count."""
    from sead.export.inspect_model import inspect_model

    info = inspect_model(model)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo(f"{info['path']}  (opset {info['opset']}, {info['parameters']} parameters)")
    typer.echo("metadata:")
    for k, v in info["metadata"].items():
        typer.echo(f"  {k}: {v}")
    typer.echo("inputs:  " + ", ".join(f"{k} {v}" for k, v in info["inputs"].items()))
    typer.echo("outputs: " + ", ".join(f"{k} {v}" for k, v in info["outputs"].items()))
    typer.echo("operators: " + ", ".join(f"{k} x{v}" for k, v in info["operators"].items()))


@app.command(name="eval")
def eval_(
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by `sead train`."),
    lengths: str = typer.Option(None, help="Comma-separated sizes (digits, bits, cells), e.g. "
                                "16,1000,1000000 (default: the task's; 6,12,24,48 digits for multiplication)."),
    problems: int = typer.Option(256, min=1, help="At most this many problems per length and family."),
    seed: int = typer.Option(0),
    max_steps: int = typer.Option(None, min=1, max=MAX_STEPS, help="Step cap (default 2 x the problem's diameter + 16: its length on a tape)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON rows."),
) -> None:
    """Exact-match accuracy against exact oracles, with steps used, per length and family.

    Example: sead eval addition.pt --lengths 16,100,1000,10000
    """
    import sys

    _need_torch("eval")
    from sead.train.checkpoint import load_checkpoint
    from sead.train.evaluate import evaluate, format_table

    model, _ = load_checkpoint(checkpoint)
    report = lambda r: print(f"  {r.family} L={r.length}: {r.exact}/{r.problems}", file=sys.stderr)
    sizes = _lengths(lengths) if lengths else list(get_task(model.config.task).eval_sizes)
    rows = evaluate(model, sizes, seed=seed, max_problems=problems, max_steps=max_steps, progress=report)
    typer.echo(json.dumps([dict(vars(r)) for r in rows], indent=1) if as_json else format_table(rows))
