"""`sead train`, `sead export`, `sead inspect`, `sead eval`: the model's life before serving."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from sead.runtime.tasks import MAX_STEPS, get_task
from .options import EVAL_SIZES, TASK_NAMES, TaskName, need_torch, parse_lengths, plural


def train(
    task: TaskName = typer.Argument(..., help=f"The task: {TASK_NAMES}."),
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint file to write."),
    seed: int = typer.Option(0, help="Random seed; training is deterministic for a seed."),
    steps: int = typer.Option(None, min=1, help="Optimizer steps (default: the task's recipe; a recipe's anneal "
                              "phase keeps its share of them)."),
    minutes: float = typer.Option(None, min=0.01, help="Stop early after this many minutes (default: the task's "
                                  "recipe)."),
    lengths: str = typer.Option(None, help="Sizes of the generalization table printed at the end "
                                f"(default: the task's: {EVAL_SIZES})."),
) -> None:
    """Train a SEAD rule on short problems with the task's recipe and write a one-file checkpoint.

    Example: sead train parity --out parity.pt --seed 1
    """
    need_torch("train")
    from sead.runtime.files import Output
    from sead.train.checkpoint import checkpoint_bytes
    from sead.train.evaluate import evaluate, format_table
    from sead.train.loop import train as run_training
    from sead.train.recipes import recipe

    cfg = recipe(task.value, seed=seed, steps=steps, max_minutes=minutes)
    table_lengths = parse_lengths(lengths) if lengths else list(get_task(task.value).eval_sizes)
    with Output(out, binary=True) as sink:  # an unwritable --out is refused before training, not after
        model, record = run_training(cfg)
        rows = evaluate(model, table_lengths, max_problems=64)
        record["generalization"] = [dict(vars(r)) for r in rows]
        sink.write(checkpoint_bytes(model, record))
    typer.echo(format_table(rows))
    typer.echo(f"wrote {out} ({model.num_parameters()} parameters, {plural(record['steps_done'], 'step')}, "
               f"{record['seconds']} s)")


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
    need_torch("export")
    from sead.export.exporter import export_checkpoint

    path, report = export_checkpoint(checkpoint, output, opset)
    flips = sum(r.get("rounding_flips", 0) for r in report)
    worst = max((r.get("max_logit_error", 0.0) for r in report), default=0.0)
    typer.echo(f"wrote {path}: verified against PyTorch in {len(report)} checks "
               f"(lengths 1 to 100,000; state values flipped by rounding: {flips}; max logit error {worst:.2g})")


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
    typer.echo("lookup forms (engine layouts lookup and window_layout classes):")
    for k, v in info["lookup_forms"].items():
        typer.echo(f"  {k}: {v if isinstance(v, str) else json.dumps(v)}")


def eval_(
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by `sead train`."),
    lengths: str = typer.Option(None, help="Comma-separated sizes (digits, bits, cells), e.g. "
                                f"16,1000,1000000 (default: the task's: {EVAL_SIZES})."),
    problems: int = typer.Option(256, min=1, help="At most this many problems per length and family."),
    seed: int = typer.Option(0),
    max_steps: int = typer.Option(None, min=1, max=MAX_STEPS, help="Step cap (default 2 x the problem's diameter + 16: its length on a tape)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON rows."),
) -> None:
    """Exact-match accuracy against exact oracles, with steps used, per length and family.

    Example: sead eval addition.pt --lengths 16,100,1000,10000
    """
    need_torch("eval")
    from sead.train.checkpoint import load_checkpoint
    from sead.train.evaluate import evaluate, format_table

    model, _ = load_checkpoint(checkpoint)
    report = lambda r: print(f"  {r.family} L={r.length}: {r.exact}/{r.problems}", file=sys.stderr)
    sizes = parse_lengths(lengths) if lengths else list(get_task(model.config.task).eval_sizes)
    rows = evaluate(model, sizes, seed=seed, max_problems=problems, max_steps=max_steps, progress=report)
    typer.echo(json.dumps([dict(vars(r)) for r in rows], indent=1) if as_json else format_table(rows))
