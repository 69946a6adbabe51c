"""`sead run --ray [ADDRESS]`: the answers of `sead run` solved on a Ray cluster (sead.serve.ray_data).
File handling, validation, formats and exit codes are run_cmd's, shared with a local run. Needs
the 'ray' extra."""
from __future__ import annotations

from typing import Iterable, Iterator

from sead.runtime.errors import InputError
from sead.runtime.loop import Result


def ray_answers(address: str, model: str, engine: str, lines: Iterable[tuple[int, str]], source: str,
                max_steps: int | None, actors: int | None) -> Iterator[tuple[int, Result | InputError]]:
    """(line number, Result or InputError) per line, in input order, from the cluster's actors."""
    from sead.serve import ray_data

    ray_data.connect(address)
    for rec in ray_data.solve_lines(lines, model, engine, max_steps, actors):
        if rec["error"] is not None:
            yield rec["line"], InputError(rec["error"], rec["line"], source)
        else:
            yield rec["line"], Result(rec["output"], rec["steps"], rec["converged"])
