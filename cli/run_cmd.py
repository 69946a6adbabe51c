"""`sead run`: answer a file of problems with an exported model. numpy + engines only, no torch."""
from __future__ import annotations

import contextlib
import json
from collections import deque
from enum import Enum

import typer

from sead.runtime.errors import InputError, QueueFull
from sead.runtime.files import Output, open_input, refuse_same_file
from sead.runtime.lines import iter_lines, line_limit
from sead.runtime.tasks import MAX_STEPS
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
    model: str = typer.Option("addition", help="A shipped model (addition, parity, rule110, multiplication) or an .onnx path."),
    engine: Engine = typer.Option(Engine.auto, help="auto picks trt, then ort-cuda, then ort."),
    input: str = typer.Option("-", "--input", "-i", help="Problem file, one per line ('-': stdin); a pipe or FIFO too."),
    output: str = typer.Option("-", "--output", "-o", help="Answer file ('-': stdout), replaced only on success."),
    format: Format = typer.Option(Format.text, "--format", "-f", help="text: one answer per line; jsonl: records."),
    batch_size: int = typer.Option(4096, min=1, help="Problems per engine batch (at most)."),
    max_steps: int = typer.Option(None, min=0, max=MAX_STEPS, help="Step cap per problem (default 2 x length + 16)."),
    skip_invalid: bool = typer.Option(False, help="Answer the valid lines; report each invalid one."),
    allow_unverified_sizes: bool = typer.Option(False, help="Also answer problems larger than the model was checked "
                                                "exact at (its sead.verified_size); their answers may be wrong."),
    ray: str = typer.Option(None, "--ray", metavar="[ADDRESS]", help="Solve on Ray: alone, RAY_ADDRESS or a new "
                            "local instance; 'auto', HOST:PORT or ray://HOST:10001 for a cluster. Needs sead[ray]."),
    ray_actors: int = typer.Option(None, min=1, help="With --ray: actors, one CPU each (default: the cluster's CPUs)."),
) -> None:
    """Solve problems by iterating the model's step until each state settles.

    Exit status: 0 all answered; 1 some did not converge; 2 invalid input, usage or a file that
    cannot be read or written; 130 interrupted; 141 the output pipe was closed; 143 terminated.

    Example: printf '123+877\\n99999999+1\\n' | sead run
    """
    from sead.runtime.model_file import resolve_model

    source = "<stdin>" if input == "-" else input
    model_path = str(resolve_model(model))
    if allow_unverified_sizes and ray is not None:
        raise typer.BadParameter("runs on Ray answer only verified sizes", param_hint="--allow-unverified-sizes")
    refuse_same_file(output, {"input": input if input != "-" else 0, "model": model_path})  # before any read
    with open_input(input) as stream, contextlib.ExitStack() as stack:
        with Output(output) as out:  # made now, so an unwritable output is refused before any work
            from sead.runtime import Runtime

            # with --ray this runtime only validates: the actors load their own
            runtime = stack.enter_context(Runtime(model_path, "ort" if ray is not None else engine.value,
                                                  max_batch_rows=batch_size,
                                                  allow_unverified_sizes=allow_unverified_sizes))
            invalid, total = 0, 0
            for number, text in iter_lines(stream, line_limit(runtime.size_limit), source):
                total += 1
                try:
                    runtime.limits([runtime.parse(text, number, source)], max_steps, number, source)
                except InputError as exc:
                    invalid += 1
                    if not skip_invalid:
                        typer.echo(exc.located(), err=True)
            if invalid and not skip_invalid:
                typer.echo(f"{source}: {invalid} invalid line(s); nothing was solved", err=True)
                raise typer.Exit(2)  # the output file is left as it was
            stream.seek(0)
            if ray is not None:  # the same command, solved on a Ray cluster
                from .ray_run import ray_answers

                answers = ray_answers(ray, model_path, engine.value, iter_lines(stream), source, max_steps, ray_actors)
            else:
                answers = _local_answers(runtime, stream, source, max_steps, total)
            not_converged = _write(answers, out, format, source)
    if invalid:
        raise typer.Exit(2)
    if not_converged:
        raise typer.Exit(1)


def _local_answers(runtime, stream, source: str, max_steps, total: int):
    """(line number, Result or InputError) for each line of the (validated) stream, in input
    order, with two chunks in flight so the engine never waits for the writer."""
    from .progress import RunProgress

    in_flight: deque = deque()

    def submit(chunk: list[tuple[int, str]]):
        parsed, errors = [], {}
        for number, text in chunk:
            try:
                p = runtime.parse(text, number, source)
                runtime.limits([p], max_steps, number, source)
                parsed.append(p)
            except InputError as exc:  # only with --skip-invalid: the others stopped at validation
                errors[number] = exc
        while True:
            try:
                in_flight.append((chunk, errors, runtime.submit_parsed(parsed, max_steps)))
                return
            except QueueFull:  # our own earlier chunk fills the queue: hand it out, then retry
                if not in_flight:
                    raise
                yield from answers(*in_flight.popleft())

    def answers(chunk, errors, future):
        results = iter(future.result())
        for number, _ in chunk:
            yield number, errors[number] if number in errors else next(results)

    with RunProgress(runtime, total):
        chunk: list[tuple[int, str]] = []
        for item in iter_lines(stream):
            chunk.append(item)
            if len(chunk) >= CHUNK_LINES:
                yield from submit(chunk)
                chunk = []
                if len(in_flight) >= 2:
                    yield from answers(*in_flight.popleft())
        if chunk:
            yield from submit(chunk)
        while in_flight:
            yield from answers(*in_flight.popleft())


def _write(answers, out: Output, fmt: Format, source: str) -> int:
    """Write each answer as text or JSONL, report invalid and unconverged lines on stderr.
    -> how many did not converge."""
    not_converged = 0
    for number, r in answers:
        if isinstance(r, InputError):
            typer.echo(r.located(), err=True)
            out.write(json.dumps({"line": number, "error": r.reason}) + "\n" if fmt is Format.jsonl else "\n")
            continue
        if not r.converged:
            not_converged += 1
            typer.echo(f"{source}:{number}: did not converge within {plural(r.steps, 'step')}", err=True)
        if fmt is Format.jsonl:
            out.write(json.dumps({"line": number, "output": r.answer, "steps": r.steps, "converged": r.converged}) + "\n")
        else:
            out.write((r.answer or "") + "\n")
    return not_converged


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"
