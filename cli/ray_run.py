"""`sead run --ray [ADDRESS]`: a local `sead run` (same validation, output formats, reports and
exit codes) whose solving happens on a Ray cluster (sead.serve.ray_data). Needs the 'ray' extra."""
from __future__ import annotations

import json
import shutil
import sys
import tempfile

import typer

from sead.runtime.errors import InputError, SeadError
from sead.runtime.lines import iter_lines, open_binary


def run_on_ray(address: str, model: str, engine: str, input: str, output: str, jsonl: bool,
               max_steps: int | None, skip_invalid: bool, actors: int | None) -> None:
    from sead import Runtime
    from sead.serve import ray_data

    ray_data.require_ray()
    source = "<stdin>" if input == "-" else input
    with open_binary(input) as raw, tempfile.TemporaryFile() as spool:
        stream = raw
        if input == "-":  # read twice: validate here, then solve on the cluster
            shutil.copyfileobj(raw, spool)
            spool.seek(0)
            stream = spool
        with Runtime(model, "ort") as checker:  # only to validate: the actors load their own
            invalid = _validate(checker, stream, source, skip_invalid)
        if invalid and not skip_invalid:
            typer.echo(f"{source}: {invalid} invalid line(s); nothing was solved", err=True)
            raise typer.Exit(2)
        stream.seek(0)
        ray_data.connect(address)
        try:
            out = sys.stdout if output == "-" else open(output, "w", encoding="utf-8")
        except OSError as exc:
            raise SeadError(f"{output}: cannot write the output file ({exc.strerror})") from None
        not_converged = 0
        try:
            for rec in ray_data.solve_lines(iter_lines(stream), model, engine, max_steps, actors):
                not_converged += _write(out, rec, source, jsonl)
        finally:
            if out is not sys.stdout:
                out.close()
    if invalid:
        raise typer.Exit(2)
    if not_converged:
        raise typer.Exit(1)


def _validate(checker, stream, source: str, skip_invalid: bool) -> int:
    """-> the number of invalid lines, each reported unless skip_invalid (then they are reported in place)."""
    invalid = 0
    for number, text in iter_lines(stream):
        try:
            checker.parse(text, number, source)
        except InputError as exc:
            invalid += 1
            if not skip_invalid:
                typer.echo(exc.located(), err=True)
    return invalid


def _write(out, rec: dict, source: str, jsonl: bool) -> int:
    """One answer as `sead run` writes it; -> 1 if it did not converge."""
    number = rec["line"]
    if rec["error"] is not None:
        typer.echo(InputError(rec["error"], number, source).located(), err=True)
        out.write(json.dumps({"line": number, "error": rec["error"]}) + "\n" if jsonl else "\n")
        return 0
    if not rec["converged"]:
        typer.echo(f"{source}:{number}: did not converge within {rec['steps']} steps", err=True)
    if jsonl:
        out.write(json.dumps({"line": number, "output": rec["output"], "steps": rec["steps"],
                              "converged": rec["converged"]}) + "\n")
    else:
        out.write((rec["output"] or "") + "\n")
    return 0 if rec["converged"] else 1
