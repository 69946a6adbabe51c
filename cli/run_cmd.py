"""`sead run`: answer a file of problems with an exported model. numpy + engines only, no torch."""
from __future__ import annotations

import contextlib
import json
import sys
from enum import Enum
from json.encoder import encode_basestring_ascii as _string  # json.dumps's own quoting of a str

import typer

from sead.runtime.errors import InputError
from sead.runtime.files import Output, open_input, refuse_same_file
from sead.runtime.lines import iter_line_blocks, iter_lines, line_limit
from sead.runtime.tasks import MAX_STEPS
from .options import Engine, engine_option, model_option, plural

CHUNK_LINES = 1 << 14


class Format(str, Enum):
    text = "text"
    jsonl = "jsonl"


def run(
    model: str = model_option(),
    engine: Engine = engine_option(),
    input: str = typer.Option("-", "--input", "-i", help="Problem file, one per line ('-': stdin); a pipe or FIFO too."),
    output: str = typer.Option("-", "--output", "-o", help="Answer file ('-': stdout), replaced only on success."),
    format: Format = typer.Option(Format.text, "--format", "-f", help="text: one answer per line; jsonl: records."),
    batch_size: int = typer.Option(None, min=1, help="Problems per engine batch at most (default: the engine's "
                                   "preferred batch of cells)."),
    max_steps: int = typer.Option(None, min=0, max=MAX_STEPS, help="Step cap per problem (default 2 x length + 16)."),
    skip_invalid: bool = typer.Option(False, help="Answer the valid lines; report each invalid one."),
    allow_unverified_sizes: bool = typer.Option(False, help="Also answer problems larger than the model was checked "
                                                "exact at (its sead.verified_size); their answers may be wrong."),
    ray: str = typer.Option(None, "--ray", metavar="[ADDRESS]", help="Solve on Ray: alone, RAY_ADDRESS or a new "
                            "local instance; 'auto', HOST:PORT or ray://HOST:10001 for a cluster. Needs sead[ray]."),
    ray_actors: int = typer.Option(None, min=1, help="With --ray: actors, one CPU each (default: the cluster's CPUs)."),
) -> None:
    """Solve problems by iterating the model's step until each state settles.

    Exit status: 0 all answered; 1 some did not converge, or an internal error; 2 invalid input,
    usage or a file that cannot be read or written; 130 interrupted; 141 the output pipe was closed;
    143 terminated.

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
            if ray is None and not skip_invalid and out.replaces_on_success:
                invalid, not_converged = 0, _solve_in_one_pass(runtime, stream, source, max_steps, out, format)
            else:
                invalid, total = _validate(runtime, stream, source, max_steps, report=not skip_invalid)
                if invalid and not skip_invalid:
                    _refuse(source, invalid)
                stream.seek(0)
                if ray is not None:  # the same command, solved on a Ray cluster
                    from .ray_run import ray_answers

                    answers = ray_answers(ray, model_path, engine.value,
                                          iter_lines(stream, line_limit(runtime.size_limit), source),
                                          source, max_steps, ray_actors)
                    not_converged = _write_lines(answers, out, format, source)
                else:
                    not_converged = _write(_local_answers(runtime, stream, source, max_steps, total), out, format,
                                           source)
    if invalid:
        raise typer.Exit(2)
    if not_converged:
        raise typer.Exit(1)


def _solve_in_one_pass(runtime, stream, source: str, max_steps, out: Output, fmt: Format) -> int:
    """Validate while solving, for an output that a temporary file replaces only on success: a
    bad line found late still leaves no answer behind, and then every bad line is named as the
    validation pass would. -> how many did not converge."""
    total = _line_count(stream) if sys.stderr.isatty() else 0  # only a progress bar needs it (cli/progress.py)
    try:
        return _write(_local_answers(runtime, stream, source, max_steps, total, skip_invalid=False), out, fmt, source)
    except InputError:
        stream.seek(0)
        invalid, _ = _validate(runtime, stream, source, max_steps, report=True)
        if not invalid:
            raise
        _refuse(source, invalid)


def _refuse(source: str, invalid: int):
    typer.echo(f"{source}: {invalid} invalid line(s); no answer was written", err=True)
    raise typer.Exit(2)  # the output file is left as it was


def _line_count(stream) -> int:
    """The stream's lines, for the progress bar (a final line without a newline counts too)."""
    count, last = 0, b"\n"
    while block := stream.read(1 << 20):
        count, last = count + block.count(b"\n"), block[-1:]
    stream.seek(0)
    return count + (last != b"\n")


def _validate(runtime, stream, source: str, max_steps, report: bool) -> tuple[int, int]:
    """Check every line before anything is solved, a block at a time (bounded memory).
    -> (invalid, total); with report, each invalid line is named on stderr."""
    invalid = total = 0
    for first, texts in _blocks(stream, runtime, source):
        total += len(texts)
        try:
            runtime.validate(texts, max_steps, first, source)
        except InputError:  # again, line by line, to name each bad one
            for number, text in enumerate(texts, first):
                try:
                    runtime.validate([text], max_steps, number, source)
                except InputError as exc:
                    invalid += 1
                    if report:
                        typer.echo(exc.located(), err=True)
    return invalid, total


def _blocks(stream, runtime, source: str):
    """(first line number, texts) of the stream, in blocks of at most CHUNK_LINES lines."""
    for first, texts in iter_line_blocks(stream, line_limit(runtime.size_limit), source):
        for start in range(0, len(texts), CHUNK_LINES):
            yield first + start, texts[start: start + CHUNK_LINES]


def _local_answers(runtime, stream, source: str, max_steps, total: int, skip_invalid: bool = True):
    """Answered blocks of the stream, in input order: the runtime's one streaming loop
    (Runtime.stream_blocks), with a progress bar. skip_invalid=False: the first bad line raises
    InputError."""
    from .progress import RunProgress

    with RunProgress(runtime, total):
        yield from runtime.stream_blocks((texts for _, texts in _blocks(stream, runtime, source)), max_steps,
                                         skip_invalid=skip_invalid, source=source, chunk=CHUNK_LINES)


def _write(blocks, out: Output, fmt: Format, source: str) -> int:
    """Write Answered blocks (Runtime.stream_blocks): a block whose every line was answered in one
    write, any other line by line (_write_lines). -> how many did not converge."""
    not_converged = 0
    for block in blocks:
        if not block.errors and block.results.converged.all():
            out.write(_answered_text(block) if fmt is Format.text else _answered_jsonl(block))
        else:
            not_converged += _write_lines(block.items(), out, fmt, source)
    return not_converged


def _answered_text(block) -> str:
    return "".join(answer + "\n" for answer in block.results.answers)


def _answered_jsonl(block) -> str:
    """The JSONL records _write_lines writes for a block whose every line converged (tested equal),
    without a Result or a dict per line."""
    lines = range(block.first, block.first + block.count)
    return "".join(f'{{"line": {n}, "output": {_string(a)}, "steps": {s}, "converged": true}}\n'
                   for n, a, s in zip(lines, block.results.answers, block.results.steps.tolist()))


def _write_lines(answers, out: Output, fmt: Format, source: str) -> int:
    """Write each (line number, Result or InputError) as text or JSONL, report invalid and
    unconverged lines on stderr. -> how many did not converge."""
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
