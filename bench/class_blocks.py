#!/usr/bin/env python3
"""Class-coded blocks, an experiment: m steps a lookup for addition too, from a state of several
channels. Timed against the lookup form the runtime runs, states checked against it.

    python bench/class_blocks.py [--k 64] [--out bench/results/class_blocks_ort_cpu.json]

The lookup layout's block table reads every digit within m cells, n^(2m+1) entries: too many for
addition's 76 digits past one step. But a block's result depends on most of those cells only
through a few classes of their digit (addition's 3-step block: classes 1, 1, 2, 76, 8, 4, 2 from
left to right, 1,280 entries; its 6-step block 34,560 entries from 7 class maps). The classes of each position are found exactly, by running the
block on one digit of each candidate class (`position_classes`). A state that holds, per cell, its
digit and each class map the block reads, as channels, indexes the block with one convolution (each
position reads its channel); the table gives every channel of the centre after m steps, and
whether the block's last step changed it (the hot cells of a tile window). Three operators for m
steps, as the lookup form takes for one of addition's steps, but on 5-6 channels instead of one.

Each shipped tape model's tile window (as bench/window_forms.py builds it) and a 131,072-cell row
run K steps, hot mode, in two forms of the class blocks: the convolution writing one index per
output channel (`conv`), or one index and an Expand (`expand`). Every form's digits and hot cells
must equal the lookup form's. On this CPU both forms ran slower than the lookup form; on a GPU, where
a window step costs its kernel launches, bench/gpu_check.py runs the same (section "windows").
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from window_forms import session, us_per_step, window_codes  # bench/window_forms.py

from sead.runtime import graph as G
from sead.runtime.model_file import load_step_model
from sead.runtime.rule import Rule

CASES = (("addition", 3), ("addition", 6), ("parity", 6))  # (model, steps a block); Rule 110's step
# tells every neighbour digit apart, so its class blocks are its lookup blocks


def _class_ids(rows: np.ndarray) -> np.ndarray:
    """Rows -> class ids numbered by first appearance (so digit 0, the empty cell, is class 0)."""
    _, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    return np.argsort(np.argsort(first))[inverse.reshape(-1)]


def _run(step: np.ndarray, cells: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(P, 2m + 1) digits -> (the centre after m steps, whether step m changed it)."""
    before = None
    for _ in range(m):
        before = cells[:, cells.shape[1] // 2]
        cells = step[cells[:, :-2], cells[:, 1:-1], cells[:, 2:]]
    return cells[:, 0], cells[:, 0] != before


def _grid(maps: list[np.ndarray]) -> np.ndarray:
    """One digit of each class at each position, every combination: (prod classes, positions)."""
    reps = [np.array([np.flatnonzero(c == k)[0] for k in range(c.max() + 1)]) for c in maps]
    return np.stack([g.reshape(-1) for g in np.meshgrid(*reps, indexing="ij")], 1)


def position_classes(step: np.ndarray, m: int) -> list[np.ndarray]:
    """For each of the 2m + 1 positions a block reads, the classes of digit that no window can
    tell apart in the block's result (the centre's digit and whether step m changed it). Exact:
    a block of j steps runs the step on three blocks of j - 1, and the step tells its left (right)
    neighbours apart only by a few classes, so a position's classes refine no further than those
    of the left block's left class, the centre block's digit and the right block's right class
    that read it. Each j runs on one digit of every such combination and merges what the result
    cannot tell apart."""
    n = step.shape[0]
    left = _class_ids(step.reshape(n, n * n))                    # a left neighbour's classes
    right = _class_ids(step.transpose(2, 0, 1).reshape(n, n * n))  # a right neighbour's
    digit, of_left, of_right = [np.arange(n)], [left], [right]     # per position: classes of F, left(F), right(F)
    for j in range(1, m + 1):
        candidates = []
        for p in range(-j, j + 1):
            parts = [maps[p - c + j - 1] for maps, c in ((of_left, -1), (digit, 0), (of_right, 1)) if abs(p - c) <= j - 1]
            candidates.append(_class_ids(np.stack(parts, 1)))
        counts = [int(c.max()) + 1 for c in candidates]
        centre, hot = _run(step, _grid(candidates), j)
        classes = lambda values: [_class_ids(np.moveaxis(values.reshape(counts), i, 0).reshape(counts[i], -1))[candidates[i]]
                                  for i in range(2 * j + 1)]
        result = classes(centre.astype(np.int64) * 2 + hot)
        digit, of_left, of_right = classes(centre), classes(left[centre]), classes(right[centre])
    return result


class ClassBlocks:
    """The channels, convolution weights and table of m-step class-coded blocks of one rule."""

    def __init__(self, tables: G.LookupTables, m: int):
        n, self.m = tables.n, m
        step = tables.step.reshape(n, n, n)
        maps = position_classes(step, m)
        self.channels = [np.arange(n)]  # channel 0: the digit itself; then each class map read
        reads = []                      # per position: the channel it reads (None: no class matters)
        for c in maps:
            if c.max() == 0:
                reads.append(None)
                continue
            same = [i for i, known in enumerate(self.channels) if np.array_equal(known, c)]
            reads.append(same[0] if same else len(self.channels))
            if not same:
                self.channels.append(c)
        counts = [int(c.max()) + 1 for c in maps]
        strides = np.cumprod([1] + counts[::-1])[:-1][::-1]
        self.entries = int(np.prod(counts))
        digit, hot = _run(step, _grid(maps), m)
        c = len(self.channels)  # the table's last channel: whether step m changed the centre
        self.table = np.zeros((1, c + 1, self.entries), np.float32)
        for i, channel in enumerate(self.channels):
            self.table[0, i] = channel[digit]
        self.table[0, c] = hot
        self.weight = np.zeros((1, c + 1, 2 * m + 1), np.float32)
        for position, channel in enumerate(reads):
            if channel is not None:
                self.weight[0, channel, position] = strides[position]
        self.counts = counts

    def state(self, digits: np.ndarray) -> np.ndarray:
        """(1, 1, cells) lookup digits -> (1, C + 1, cells) class-coded state."""
        d = digits.reshape(-1).astype(np.int64)
        return np.stack([c[d] for c in self.channels] + [np.zeros_like(d)]).astype(np.float32)[None]

    def graph(self, k: int, expand: bool):
        """K steps (a multiple of m) in blocks, hot mode: state (1, C + 1, cells) -> state_out,
        hot (1, cells) bool."""
        b = G._Builder(f"class_blocks_{k}")
        c1 = self.table.shape[1]
        weight = self.weight if expand else np.repeat(self.weight, c1, axis=0)
        state = "state"
        for _ in range(k // self.m):
            index = b.op("Cast", [b.op("Conv", [state, b.const(weight)], pads=[self.m, self.m])], to=G.INT32)
            if expand:
                index = b.op("Expand", [index, b.const(np.array([1, c1, 1], np.int64))])
            state = b.op("GatherElements", ["table", index], axis=2)
        b.op("Identity", [state], "state_out")
        last = b.op("Slice", [state, b.const([c1 - 1]), b.const([c1]), b.const([1])])
        b.op("Squeeze", [b.op("Greater", [last, b.const(np.float32(0.5))]), b.const([1])], "hot")
        return b.model([G._io("state", G.FLOAT, [1, c1, "cells"]), G._io("table", G.FLOAT, [1, c1, self.entries])],
                       [G._io("state_out", G.FLOAT, [1, c1, "cells"]), G._io("hot", G.BOOL, [1, "cells"])])


@functools.lru_cache(maxsize=None)
def tables_of(name: str, m: int) -> tuple[G.LookupTables, ClassBlocks, float]:
    """A shipped model's lookup tables and class blocks of m steps, and seconds to build the latter."""
    tables = G.lookup_tables(Rule.from_step(load_step_model(name)), 1 << 24)
    start = time.perf_counter()
    blocks = ClassBlocks(tables, m)
    return tables, blocks, time.perf_counter() - start


def forms(name: str, m: int, codes: np.ndarray, k: int, providers: list, repeats: int) -> dict:
    """The lookup form and both class-block forms of m steps on one packed row of codes, from its
    first step, K rounded down to a multiple of m: us a step and the same digits and hot cells."""
    tables, blocks, built = tables_of(name, m)
    k = k // blocks.m * blocks.m
    digits = session(G.lookup_prepare(tables, True, True), providers).run(None, {"codes": codes})[0]
    lookup = session(G.lookup_advance(tables, k, True, "hot"), providers)
    feeds = {"state": digits, **{i.name: tables.inputs[i.name] for i in lookup.get_inputs() if i.name in tables.inputs}}
    want_state, want_hot = lookup.run(None, feeds)
    out = {"k": k, "block_steps": blocks.m, "classes": blocks.counts, "channels": len(blocks.channels),
           "entries": blocks.entries, "tables_seconds": round(built, 2),
           "lookup": {"us_per_step": round(us_per_step(lambda: lookup.run(None, feeds), k, repeats), 2)}}
    cf = {"state": blocks.state(digits), "table": blocks.table}
    for form, expand in (("conv", False), ("expand", True)):
        try:  # a provider may lack a kernel for a shape
            s = session(blocks.graph(k, expand), providers)
            state, hot = s.run(None, cf)
            out[form] = {"us_per_step": round(us_per_step(lambda: s.run(None, cf), k, repeats), 2),
                         "same_as_lookup": bool(np.array_equal(state[0, 0], want_state[0, 0])
                                                and np.array_equal(hot, want_hot))}
        except Exception as exc:
            out[form] = {"failed": f"{type(exc).__name__}: {exc}"}
    return out


def row_codes(name: str, k: int) -> dict[str, np.ndarray]:
    """A tile window of a long problem (bench/window_forms.py: 5 K + 1 cells), and a packed row of
    131,072 cells: random problems of 1,024 cells, each ending in an empty cell."""
    from sead.runtime.tasks import Problems, get_task
    task, rng = get_task(name), np.random.default_rng(11)
    pieces = []
    for _ in range(128):
        p = task.parse(task.random_line(rng, 2048, 10))
        codes = task.codes(Problems.from_parsed(task, [p]), np.zeros(1, np.int64), tuple(task.shape(p)))[:, :1023]
        pieces.append(np.concatenate([codes, np.zeros((1, 1), np.uint8)], axis=1))
    return {"window": window_codes(name, 5 * k + 1), "row": np.concatenate(pieces, axis=1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--k", type=int, default=64, help="steps per call (a tile is this many cells)")
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    report = {"machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores", "k": args.k,
              "provider": "CPUExecutionProvider", "models": {}}
    for name, m in CASES:
        key = f"{name}, {m} steps a block"
        report["models"][key] = {where: forms(name, m, codes, args.k, ["CPUExecutionProvider"], args.repeats)
                                 for where, codes in row_codes(name, args.k).items()}
        print(key, json.dumps(report["models"][key]), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
