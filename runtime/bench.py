"""Benchmark pieces that need no torch: problems to time, timing a runtime, the plain ONNX Runtime
loop (a named baseline, and export's independent cross-check), the cost of one cell-update, and
this machine's roofline (measured peak FLOP/s and memory bandwidth).

The solver is runtime/loop.py's; the loop here is only what it is measured against.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from .errors import EngineUnavailable
from .model_file import StepModel
from .tasks import get_task

if TYPE_CHECKING:
    from .api import Runtime
    from .loop import Result

# (cells, problems) per measurement. Grids: 6, 12 and 24-digit products ((n + 1) x n cells), few
# of them, as a grid cell-update costs ten times a tape's and a product's steps grow with its size
DEFAULT_SHAPES = {1: ((16, 4096), (100, 512), (1000, 64), (10000, 8), (100000, 1)),
                  2: ((42, 64), (156, 16), (600, 4))}


def problem_lines(task_name: str, length: int, count: int, seed: int = 0) -> list[str]:
    """Random problems of about `length` cells (100 generations where a task runs a given number)."""
    task = get_task(task_name)
    rng = np.random.default_rng(seed)
    return [task.random_line(rng, task.size_for(length), generations=100) for _ in range(count)]


def cell_updates(task_name: str, lines: list[str], results: list[Result]) -> int:
    task = get_task(task_name)
    return sum(task.parse(line).length * r.steps for line, r in zip(lines, results))


def time_engine(runtime: Runtime, lines: list[str], min_seconds: float = 0.5) -> dict:
    """Solve `lines` repeatedly for at least min_seconds; -> throughput numbers."""
    runtime.solve(lines[:2])  # warm-up: sessions and first allocations
    runs, start = 0, time.perf_counter()
    while True:
        results = runtime.solve(lines)
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            break
    seconds = elapsed / runs
    steps = np.array([r.steps for r in results])
    return {
        "seconds": seconds,
        "problems_per_s": len(lines) / seconds,
        "cell_updates_per_s": cell_updates(runtime.metadata.task, lines, results) / seconds,
        "steps_mean": float(steps.mean()),
        "steps_max": int(steps.max()),
        "converged": int(sum(r.converged for r in results)),
        "results": results,
    }


def latency(runtime: Runtime, line: str, repeats: int = 50) -> dict:
    """Single-problem latency percentiles in milliseconds."""
    runtime.solve([line])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runtime.solve([line])
        times.append((time.perf_counter() - start) * 1e3)
    p50, p90, p99 = np.percentile(times, [50, 90, 99])
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99)}


# -- the plain ONNX Runtime loop ------------------------------------------------------------------
def plain_ort_solve(session, x: np.ndarray, max_steps: int, generations: np.ndarray | None = None):
    """The loop an ONNX Runtime user writes first: one session.run per step, the whole batch
    compared on the host after every step, every problem kept until the last settles.

    session: an InferenceSession of an exported step; x (B, C_in, *S) float32 (S: L or H, W);
    generations (B,) int, for tasks that run a given number of steps (then max_steps is unused).
    -> symbols (B, *S) int64, steps (B,) int64 (at most max_steps), settled (B,) bool. The same
    contract as the PyTorch reference loop (sead.train.model.solve)."""
    x = np.ascontiguousarray(x, np.float32)
    b = x.shape[0]
    state = np.zeros((b, session.get_inputs()[1].shape[1], *x.shape[2:]), np.float32)
    rows = (b,) + (1,) * (x.ndim - 1)  # (B,) -> broadcast over channels and cells
    steps = np.zeros(b, np.int64)
    running = np.ones(b, bool)
    # + 1: the step that changes nothing proves the fixed point
    horizon = int(generations.max(initial=0)) if generations is not None else max_steps + 1
    for t in range(horizon):
        nxt = session.run(["next_state"], {"problem": x, "state": state})[0]
        if generations is not None:
            moved = generations > t
        else:
            moved = (nxt != state).reshape(b, -1).any(axis=1) & running
            running = moved
        if not moved.any():
            break
        state = np.where(moved.reshape(rows), nxt, state)
        steps += moved
    symbols = session.run(["logits"], {"problem": x, "state": state})[0].argmax(1)
    if generations is not None:
        return symbols, steps, np.ones(b, bool)
    return symbols, np.minimum(steps, max_steps), ~running


def cpu_session(model_bytes: bytes, needed_by: str = "the plain ONNX Runtime loop", optimization: str | None = None):
    """An ONNX Runtime CPU session with default options (warnings silenced); optimization: a
    GraphOptimizationLevel's name in place of the default (the engine's, for its graphs)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise EngineUnavailable(f"{needed_by} needs the 'onnxruntime' package: pip install 'sead[cpu]' "
                                "(or 'sead[cuda]')") from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if optimization:
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, optimization)
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def ort_loop(step: StepModel):
    """The plain ONNX Runtime loop as a `sead bench` baseline, from problems to answers.
    -> solve(parsed, cap) -> (answers, steps); problems are padded to the largest shape."""
    task = get_task(step.metadata.task)
    session = cpu_session(step.proto.SerializeToString())

    def solve(problems, cap: int):
        shape = tuple(np.max([task.shape(p) for p in problems], axis=0).tolist())
        generations = np.array([p.generations for p in problems]) if task.convergence == "generations" else None
        symbols, steps, settled = plain_ort_solve(session, task.encode_many(problems, shape), cap, generations)
        answers = [task.decode(symbols[i], p) if settled[i] else None for i, p in enumerate(problems)]
        return answers, steps

    return solve


# -- the cost model and the roofline --------------------------------------------------------------
def rule_costs(input_channels: int, state_channels: int, hidden: int, rank: int, radius: int = 1) -> dict:
    """FLOPs and bytes that one cell-update (one cell, one step) needs at the least, on a tape
    (rank 1) or a grid (rank 2).

    FLOPs: the rule's two convolutions, (2 radius + 1)^rank cells wide, then 1 (2 per
    multiply-add); the readout runs once per solve and is not counted. Bytes: read the problem and
    the state and write the next state, float32, once each (intermediates kept on chip)."""
    window = (2 * radius + 1) ** rank
    flops = 2 * hidden * (input_channels + state_channels) * window + 2 * state_channels * hidden
    return {"flops_per_cell_update": flops, "bytes_per_cell_update": 4 * (input_channels + 2 * state_channels)}


def model_costs(step: StepModel) -> dict:
    """rule_costs of an exported step, its hidden width read from the rule's first convolution."""
    m = step.metadata
    weights = {t.name: tuple(t.dims) for t in step.proto.graph.initializer}
    hidden = weights["rule_in.weight"][0]
    return rule_costs(m.input_channels, m.state_channels, hidden, m.rank, m.radius)


def measure_machine(seconds: float = 0.5) -> dict:
    """Peak float32 FLOP/s (a large matrix product) and memory bandwidth (a large copy)."""
    n = 1024
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = a.copy()
    a @ b
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
    flops = 2 * n**3 * reps / (time.perf_counter() - start)
    src = np.ones(1 << 26, np.float32)  # 256 MiB: far beyond the caches
    dst = np.empty_like(src)
    np.copyto(dst, src)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        np.copyto(dst, src)
        reps += 1
    bandwidth = 2 * src.nbytes * reps / (time.perf_counter() - start)  # read + write
    return {"peak_flops": flops, "memory_bandwidth": bandwidth}


def roofline(costs: dict, machine: dict) -> dict:
    compute_bound = machine["peak_flops"] / costs["flops_per_cell_update"]
    memory_bound = machine["memory_bandwidth"] / costs["bytes_per_cell_update"]
    return {"cell_updates_per_s": min(compute_bound, memory_bound),
            "bound": "compute" if compute_bound < memory_bound else "memory",
            "compute_bound": compute_bound, "memory_bound": memory_bound}
