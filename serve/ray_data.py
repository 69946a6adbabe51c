"""`sead run --ray`: problem lines through Ray Data `map_batches` on an actor pool, answers in input order.

ONNX Runtime sessions cannot be pickled, so nothing with a session crosses the wire: each actor
loads the model into a `sead.Runtime` of its own, once, and solves the blocks it is given. A model
given as a file travels as bytes (the workers of a real cluster do not see the driver's disk); a
shipped model's name is resolved by the `sead` installed on each worker.

The driver reads the input itself, in blocks of BLOCK_LINES (line number, text) rows that it puts
in Ray's object store (which spills to disk past its memory), and reads the answers back in input
order (`preserve_order`) as the actors finish them.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from sead.runtime.errors import SeadError

BLOCK_LINES = 8192
GPU_ENGINES = ("ort-cuda", "trt")


def require_ray():
    try:
        import pyarrow  # noqa: F401
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise SeadError(f"--ray needs the 'ray' extra ({exc.name} is missing): pip install 'sead[ray]'") from None
    return ray


def connect(address: str) -> None:
    """'default': RAY_ADDRESS if set (as inside a Ray job), else a new local instance; 'local': a
    new local instance (loopback only, no dashboard); anything else goes to ray.init as is
    ('auto', 'HOST:PORT' on a cluster node, 'ray://HOST:10001' through Ray Client)."""
    ray = require_ray()
    if ray.is_initialized():
        return
    quiet = dict(log_to_driver=False, logging_level=logging.WARNING)
    if address == "local" or (address == "default" and not os.environ.get("RAY_ADDRESS")):
        ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", **quiet)
    else:
        ray.init(address=None if address == "default" else address, **quiet)


class LineSolver:
    """A Ray Data actor: one Runtime, loaded once; each call solves one block of rows."""

    def __init__(self, model: str, model_bytes: bytes | None, engine: str, max_steps: int | None):
        from sead import Runtime

        self.max_steps = max_steps
        if model_bytes is None:
            self.runtime = Runtime(model, engine, workers=1)  # one actor per reserved CPU
            return
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / Path(model).name
            path.write_bytes(model_bytes)
            self.runtime = Runtime(str(path), engine, workers=1)

    def __call__(self, block):
        """pyarrow Table {line, text} -> Table {line, output, steps, converged, error}."""
        import pyarrow as pa

        texts = block.column("text").to_pylist()
        valid, invalid = self.runtime.split_invalid(texts, self.max_steps)  # only --skip-invalid leaves any
        errors: list[str | None] = [None] * len(texts)
        for offset, exc in invalid.items():
            errors[offset] = exc.reason
        results = iter(self.runtime.solve([texts[i] for i in valid], self.max_steps))
        rows = [None if e is not None else next(results) for e in errors]
        return pa.table({
            "line": block.column("line"),
            "output": pa.array([r.answer if r else None for r in rows], pa.string()),
            "steps": pa.array([r.steps if r else 0 for r in rows], pa.int64()),
            "converged": pa.array([bool(r and r.converged) for r in rows], pa.bool_()),
            "error": pa.array(errors, pa.string()),
        })


def solve_lines(lines: Iterable[tuple[int, str]], model: str, engine: str = "auto", max_steps: int | None = None,
                actors: int | None = None) -> Iterator[dict]:
    """(line number, text) pairs -> one dict {line, output, steps, converged, error} per line, in
    input order, solved on the connected Ray cluster by `actors` actors (default: one per CPU)."""
    ray = require_ray()
    import pyarrow as pa

    refs, block = [], []
    for item in lines:
        block.append(item)
        if len(block) == BLOCK_LINES:
            refs.append(ray.put(_table(pa, block)))
            block = []
    if block:
        refs.append(ray.put(_table(pa, block)))
    if not refs:
        return
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    gpus = 1 if engine in GPU_ENGINES else 0
    size = actors or max(1, int(ray.cluster_resources().get("GPU" if gpus else "CPU", 1)))
    path = Path(model)
    model_bytes = path.read_bytes() if path.is_file() else None  # a shipped name otherwise
    answers = ray.data.from_arrow_refs(refs).map_batches(
        LineSolver, batch_format="pyarrow", batch_size=None, num_cpus=1, num_gpus=gpus,
        compute=ray.data.ActorPoolStrategy(size=min(size, len(refs))),
        fn_constructor_kwargs=dict(model=model, model_bytes=model_bytes, engine=engine, max_steps=max_steps))
    for table in answers.iter_batches(batch_format="pyarrow", batch_size=None):
        yield from table.to_pylist()


def _table(pa, block: list[tuple[int, str]]):
    return pa.table({"line": pa.array([n for n, _ in block], pa.int64()),
                     "text": pa.array([t for _, t in block], pa.string())})
