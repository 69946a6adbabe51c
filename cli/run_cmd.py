"""`sead run`: answer a file of problems with an exported model. numpy + engines only, no torch."""
from __future__ import annotations

import json
import shutil
from collections import deque
import sys
import tempfile
from enum import Enum
from typing import TextIO

import typer

from sead.runtime.errors import InputError, QueueFull, SeadError
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
) -> None:
    """Solve problems by iterating the model's step until each state settles.

    Exit status: 0 all answered; 1 some did not converge; 2 invalid input or usage.

    Example: printf '123+877\\n99999999+1\\n' | sead run
    """
    from sead.runtime import Runtime

    source = "<stdin>" if input == "-" else input
    runtime = Runtime(model, engine.value, max_batch_rows=batch_size)
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
                runtime.limits([runtime.parse(text, number, source)], max_steps, number, source)
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
    """Answer the (validated) lines of `stream` in order, two chunks in flight. -> unconverged count."""
    from .progress import RunProgress

    not_converged = 0
    in_flight: deque = deque()

    def submit(chunk: list[tuple[int, str]]) -> None:
        parsed, errors = [], {}
        for number, text in chunk:
            try:
                p = runtime.parse(text, number, source)
                runtime.limits([p], max_steps, number, source)
                parsed.append(p)
            except InputError as exc:
                errors[number] = exc
        while True:
            try:
                in_flight.append((chunk, errors, runtime.submit_parsed(parsed, max_steps)))
                return
            except QueueFull:  # wait for our own earlier chunk, then retry
                if not in_flight:
                    raise
                write(*in_flight.popleft())

    def write(chunk, errors, future) -> None:
        nonlocal not_converged
        results = iter(future.result())
        for number, _ in chunk:
            if number in errors:
                exc = errors[number]
                typer.echo(exc.located(), err=True)
                out.write(json.dumps({"line": number, "error": exc.reason}) + "\n" if fmt is Format.jsonl else "\n")
                continue
            r = next(results)
            if not r.converged:
                not_converged += 1
                typer.echo(f"{source}:{number}: did not converge within {r.steps:,} step{'s' * (r.steps != 1)}",
                           err=True)
            if fmt is Format.jsonl:
                out.write(json.dumps({"line": number, "output": r.answer, "steps": r.steps, "converged": r.converged}) + "\n")
            else:
                out.write((r.answer or "") + "\n")

    with RunProgress(runtime, total):
        chunk: list[tuple[int, str]] = []
        for item in iter_lines(stream):
            chunk.append(item)
            if len(chunk) >= CHUNK_LINES:
                submit(chunk)
                chunk = []
                if len(in_flight) >= 2:
                    write(*in_flight.popleft())
        if chunk:
            submit(chunk)
        while in_flight:
            write(*in_flight.popleft())
    out.flush()
    return not_converged
