"""`sead run`: answer a file of problems with an exported model. numpy + engines only, no torch."""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from enum import Enum
from typing import TextIO

import typer

from sead.runtime.errors import InputError, SeadError
from sead.runtime.lines import iter_lines, open_binary
from .main import app

CHUNK_LINES = 1 << 14


class Engine(str, Enum):
    auto = "auto"
    ort = "ort"
    ort_cuda = "ort-cuda"
    trt = "trt"


class Format(str, Enum):
    text = "text"
    jsonl = "jsonl"


class _Progress:
    """A progress bar of problems answered, on stderr, only when stderr is a terminal."""

    def __init__(self, total: int):
        self.total, self.done = total, 0
        self.on = sys.stderr.isatty() and total >= 1000

    def __call__(self, n: int) -> None:
        self.done += n
        if self.on:
            fill = 30 * self.done // self.total
            sys.stderr.write(f"\r[{'#' * fill}{'.' * (30 - fill)}] {self.done}/{self.total} problems")
            sys.stderr.flush()

    def close(self) -> None:
        if self.on:
            sys.stderr.write("\n")


@app.command()
def run(
    model: str = typer.Option("addition", help="A shipped model (addition, parity, rule110) or an .onnx path."),
    engine: Engine = typer.Option(Engine.auto, help="auto picks trt, then ort-cuda, then ort."),
    input: str = typer.Option("-", "--input", "-i", help="Problem file, one per line ('-': stdin)."),
    output: str = typer.Option("-", "--output", "-o", help="Answer file ('-': stdout)."),
    format: Format = typer.Option(Format.text, "--format", "-f", help="text: one answer per line; jsonl: records."),
    batch_size: int = typer.Option(4096, min=1, help="Problems per engine batch (at most)."),
    max_steps: int = typer.Option(None, min=0, help="Step cap per problem (default 2 x length + 16)."),
    skip_invalid: bool = typer.Option(False, help="Answer the valid lines; report each invalid one."),
    ray: str = typer.Option(None, "--ray", metavar="[ADDRESS]", help="Solve on Ray: alone, RAY_ADDRESS or a new "
                            "local instance; 'auto', HOST:PORT or ray://HOST:10001 for a cluster. Needs sead[ray]."),
    ray_actors: int = typer.Option(None, min=1, help="With --ray: actors, one CPU each (default: the cluster's CPUs)."),
) -> None:
    """Solve problems by iterating the model's step until each state settles.

    Exit status: 0 all answered; 1 some did not converge; 2 invalid input or usage.

    Example: printf '123+877\\n99999999+1\\n' | sead run
    """
    if ray is not None:  # the same command, solved on a Ray cluster
        from .ray_run import run_on_ray
        return run_on_ray(ray, model, engine.value, input, output, format is Format.jsonl, max_steps, skip_invalid,
                          ray_actors)
    from sead.runtime.solve import Runtime

    source = "<stdin>" if input == "-" else input
    runtime = Runtime(model, engine.value, batch_size=batch_size)
    with open_binary(input) as raw, tempfile.TemporaryFile() as spool:
        stream = raw
        if input == "-":  # stdin is read twice (validate, then solve): keep a copy on disk, not in memory
            shutil.copyfileobj(raw, spool)
            spool.seek(0)
            stream = spool
        invalid, total = 0, 0
        for number, text in iter_lines(stream):
            total += 1
            try:
                runtime.parse(text, number, source)
            except InputError as exc:
                invalid += 1
                if not skip_invalid:
                    typer.echo(exc.located(), err=True)
        if invalid and not skip_invalid:
            typer.echo(f"{source}: {invalid} invalid line(s); nothing was solved", err=True)
            raise typer.Exit(2)
        stream.seek(0)
        try:
            out = sys.stdout if output == "-" else open(output, "w", encoding="utf-8")
        except OSError as exc:
            raise SeadError(f"{output}: cannot write the output file ({exc.strerror})") from None
        try:
            not_converged = _solve_stream(runtime, stream, source, out, format, max_steps, total)
        finally:
            if out is not sys.stdout:
                out.close()
    if invalid:
        raise typer.Exit(2)
    if not_converged:
        raise typer.Exit(1)


def _solve_stream(runtime, stream, source: str, out: TextIO, fmt: Format, max_steps, total: int) -> int:
    progress = _Progress(total)
    not_converged = 0
    pending: list[tuple[int, str]] = []

    def flush() -> None:
        nonlocal not_converged
        parsed, errors = [], {}
        for number, text in pending:
            try:
                parsed.append(runtime.parse(text, number, source))
            except InputError as exc:
                errors[number] = exc
        results = iter(runtime.solve_parsed(parsed, max_steps, on_done=progress))
        for number, _ in pending:
            if number in errors:
                exc = errors[number]
                typer.echo(exc.located(), err=True)
                out.write(json.dumps({"line": number, "error": exc.reason}) + "\n" if fmt is Format.jsonl else "\n")
                continue
            r = next(results)
            if not r.converged:
                not_converged += 1
                typer.echo(f"{source}:{number}: did not converge within {r.steps} steps", err=True)
            if fmt is Format.jsonl:
                out.write(json.dumps({"line": number, "output": r.answer, "steps": r.steps, "converged": r.converged}) + "\n")
            else:
                out.write((r.answer or "") + "\n")
        pending.clear()

    for item in iter_lines(stream):
        pending.append(item)
        if len(pending) >= CHUNK_LINES:
            flush()
    if pending:
        flush()
    progress.close()
    out.flush()
    return not_converged
