"""Benchmark pieces that need no torch: timing an engine, the model's cost per cell-update, and
this machine's roofline (measured peak FLOP/s and memory bandwidth)."""
from __future__ import annotations

import time

import numpy as np

from .model_file import StepModel
from .api import Runtime
from .loop import Result
from .tasks import get_task


def problem_lines(task_name: str, length: int, count: int, seed: int = 0) -> list[str]:
    """Random problems whose tape has about `length` cells (100 generations where a task runs a
    given number)."""
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


def ort_loop(step: StepModel):
    """The loop an ONNX Runtime user writes first, as a baseline: the exported step, one
    session.run per step with default session options, the state compared on the host after
    every step. -> solve(parsed, cap) -> (answers, steps) for problems of one padded length."""
    import onnxruntime as ort

    task = get_task(step.metadata.task)
    session = ort.InferenceSession(step.proto.SerializeToString(), providers=["CPUExecutionProvider"])

    def solve(problems, cap: int):
        length = max(p.length for p in problems)
        x = np.ascontiguousarray(task.encode_many(problems, length))
        state = np.zeros((len(problems), step.metadata.state_channels, length), np.float32)
        steps = np.zeros(len(problems), np.int64)
        running = np.ones(len(problems), bool)
        generations = np.array([p.generations or 0 for p in problems]) if task.convergence == "generations" else None
        horizon = int(generations.max()) if generations is not None else cap + 1
        for t in range(horizon):
            nxt = session.run(["next_state"], {"problem": x, "state": state})[0]
            if generations is not None:
                moved = generations > t
            else:
                moved = (nxt != state).reshape(len(problems), -1).any(axis=1) & running
                running &= moved
            state = np.where(moved[:, None, None], nxt, state)
            steps += moved
            if not moved.any():
                break
        symbols = session.run(["logits"], {"problem": x, "state": state})[0].argmax(1)
        settled = ~running if generations is None else np.ones(len(problems), bool)
        answers = [task.decode(symbols[i], p) if settled[i] else None for i, p in enumerate(problems)]
        return answers, np.minimum(steps, cap) if generations is None else steps

    return solve


def model_costs(step: StepModel) -> dict:
    """FLOPs and bytes that one cell-update (one cell, one step) needs at the least.

    FLOPs: the rule's two convolutions (2 per multiply-add). Bytes: read the problem and the
    state and write the next state, float32, once each (intermediates kept on chip).
    """
    m = step.metadata
    weights = {t.name: tuple(t.dims) for t in step.proto.graph.initializer}
    hidden, c_in, width = weights["rule_in.weight"]
    flops = 2 * hidden * c_in * width + 2 * m.state_channels * hidden
    bytes_ = 4 * (m.input_channels + 2 * m.state_channels)
    return {"flops_per_cell_update": flops, "bytes_per_cell_update": bytes_}


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
