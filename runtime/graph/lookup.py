"""lookup: the whole step as one table lookup (tape rules with a Rule.step_table).

Laid out as cf with one channel: rows (B, 1, L), packed end to end where cf packs. A cell's state
is one number, its digit: the index of its pair p = s + V c (its state value s: 0 for the zero
state, and on every empty cell, else 1 + its code; and its own problem code c, which never
changes) among the n pairs a run can reach, ascending, so digit 0 is an empty cell. A step is a
convolution reading the three digits around each cell as one number ((l n + o) n + r, below 2^24:
exact in float32 in any order), a cast, and a lookup in the table of every neighbourhood's next
digit: three operators, none of the rule's arithmetic left to round. Where n is small, a block
table does the same for m steps at once from the digits within m cells (a cell's state after m
steps depends on no others; on those on one side only where the step reads one neighbour, as
parity's does), and a second one gives the last of those steps that changed the cell, so that
step counts stay exact. There are blocks of every length up to m, so that K steps take K // m
blocks of m and one lookup of the remainder. Tables are inputs, not constants: an engine holds
them once for all its graphs. Packed rows look up with GatherElements, which ONNX Runtime's CPU
provider runs faster a cell than Gather; it wants the table's rank and leading dims, (1, 1,
entries), so B unpacked rows (rings, budgets) use Gather. Budget rows run one step at a time.
"""
from __future__ import annotations

import numpy as np
import onnx

from ..rule import STEP_TABLE_ENTRIES, Rule
from .builder import (FLOAT, INT32, UINT8, Builder, advance_model, code_type, lookup_flat, tensor_io, unroll, window,
                      wrap_ring)

BLOCK_TABLE_ENTRIES = 1 << 23  # a block table's entries at most (parity's 6-step one: 9^7, 19 MB)
MAX_BLOCK_STEPS = 6            # the longest block tried (parity's, whose blocks read one side)
NEVER = np.float32(-1e9)       # block_last where no step of the block changed the cell


class LookupTables:
    """The lookup layout's tables of one rule (lookup_tables): a digit's pair, the step table and,
    where n is small, the block tables. Read-only arrays, shared by every graph and batch."""

    def __init__(self, rule: Rule, step_table: np.ndarray):
        self.rule = rule
        c, v = rule.input_channels, _lookup_v(rule)
        d = c * v  # pairs; entry ((l d + o) d + r) of `pair_step` is the next pair of pair o
        value = step_table.reshape(c, c, c, v, v, v).transpose(0, 3, 1, 4, 2, 5)  # (c_l, s_l, c_o, s_o, c_r, s_r)
        pair_step = (value + v * np.arange(c).reshape(1, 1, c, 1, 1, 1)).reshape(-1).astype(np.int64)
        step_of = lambda p: pair_step[((p[:, None, None] * d + p[None, :, None]) * d + p[None, None, :]).reshape(-1)]
        reach = np.zeros(d, bool)
        reach[v * np.arange(c)] = True  # a first step's pairs: every code, no state yet
        while True:  # close under the step: a run from a first step never leaves these pairs
            after = np.zeros(d, bool)
            after[step_of(np.flatnonzero(reach))] = True
            if not (after & ~reach).any():
                break
            reach |= after
        self.pairs = np.flatnonzero(reach)  # digit -> pair; pair 0 (an empty cell) is digit 0
        digit_of_pair = np.zeros(d, np.int64)  # a pair no run reaches: 0 (never handed an engine)
        digit_of_pair[self.pairs] = np.arange(len(self.pairs))
        # (C_in (Z + 1),) float32, Z the zero state's code: entry c (Z + 1) + q is the digit of a cell
        # of code c and state code q (state value 0 for Z, else q + 1; an empty cell's is 0)
        q = np.arange(rule.zero_code + 1)
        pair = v * np.arange(c)[:, None] + np.where(q == rule.zero_code, 0, q + 1)[None, :] * (np.arange(c) > 0)[:, None]
        self.digit_of_codes = digit_of_pair[pair].reshape(-1).astype(np.float32)
        n = self.n = len(self.pairs)
        self.step = digit_of_pair[step_of(self.pairs)]  # (n^3,): the next digit of (l n + o) n + r
        # a block reads up to m digits past each end: exact at a row's ends and between packed
        # rows only because an empty cell stays empty whatever its neighbours
        step3 = self.step.reshape(n, n, n)
        keeps_empty = not step3[:, 0, :].any()
        sides = (int((step3 != step3[:1]).any()), int((step3 != step3[..., :1]).any()))  # reads left, right
        self.block_steps = next((m for m in range(MAX_BLOCK_STEPS, 1, -1)
                                 if n ** (m * sum(sides) + 1) <= BLOCK_TABLE_ENTRIES), 1) if keeps_empty else 1
        self.sides = sides
        shaped = lambda a: _read_only(np.ascontiguousarray(a, np.float32).reshape(1, 1, -1))
        self.inputs = {"table": shaped(self.step)}  # the graphs' table inputs by name, (1, 1, entries)
        # blocks of every length 2..m: K steps take K // m blocks of m and one of the remainder
        blocks = _block_tables(self.step, n, self.block_steps, sides) if self.block_steps > 1 else {}
        for m, (block, last) in blocks.items():
            self.inputs.update({f"block_table_{m}": shaped(block), f"block_last_{m}": shaped(last)})

    def reach(self, steps: int) -> tuple[int, int]:
        """The cells a lookup of `steps` steps reads left and right of a cell."""
        return (1, 1) if steps == 1 else (steps * self.sides[0], steps * self.sides[1])

    def plan(self, k: int, wrap: int = 0) -> list[int]:
        """The steps of each lookup that K steps take, in order: a single step if the remainder is
        one, else a block of the remainder, then blocks of block_steps. Ring rows shorter than a
        block (0 < wrap < block_steps) take single steps."""
        m = self.block_steps
        return [1] * k if 0 < wrap < m else block_plan(k, m)


def block_plan(k: int, m: int) -> list[int]:
    """K steps in blocks of at most m: the remainder first (if any), then k // m blocks of m."""
    return [k % m] * (k % m > 0) + [m] * (k // m)


def _read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def _block_tables(step: np.ndarray, n: int, m: int, sides: tuple[int, int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """-> for each block length j in 2..m: (centre digit after j steps, last step 1..j that
    changed the centre (float32) or NEVER), each over the windows of the w = j (left + right) + 1
    digits the block reads (`sides`: whether the step reads its left, right neighbour), index
    sum x_i n^(w-1-i). Built on broadcast views, one window axis per cell: no index array of n^w
    int64."""
    small = np.uint8 if n <= 256 else np.int32
    index = np.uint16 if n ** 3 <= 1 << 16 else np.int32  # the step's index, for the broadcast windows
    step = step.astype(small)
    left, right = sides
    width = lambda j: j * (left + right) + 1  # cells the centre after j steps depends on
    after = [np.arange(n, dtype=small)]  # after[j]: the centre after j steps, one axis per cell it reads

    def placed(a: np.ndarray, j: int, q: int, big: int) -> np.ndarray:
        """after[j] as a view on the cells after[big] reads, for the centre q cells along."""
        lead = q + (big - j) * left
        return a.reshape((1,) * lead + (n,) * width(j) + (1,) * (width(big) - width(j) - lead))

    for j in range(1, m + 1):
        a = after[j - 1].astype(index)
        own = placed(a, j - 1, 0, j)
        l_ = placed(a, j - 1, -1, j) if left else 0  # a neighbour the step does not read: any digit
        r_ = placed(a, j - 1, 1, j) if right else 0
        after.append(step[(l_ * n + own) * n + r_])
    blocks = {}
    for big in range(2, m + 1):
        shape = (n,) * width(big)
        last = np.full(shape, NEVER, np.float32)
        for j in range(1, big + 1):
            changed = placed(after[j], j, 0, big) != placed(after[j - 1], j - 1, 0, big)
            np.copyto(last, np.float32(j), where=changed)  # broadcast, never materialized
        blocks[big] = after[big].reshape(-1), last.reshape(-1)
    return blocks


def lookup_tables(rule: Rule, max_entries: int = STEP_TABLE_ENTRIES) -> LookupTables | None:
    """The lookup layout's tables, from Rule.step_table; None where the rule has no step table of
    at most max_entries entries."""
    table = rule.step_table(max_entries)
    return None if table is None else LookupTables(rule, table)


def _lookup_v(rule: Rule) -> int:
    return (1 << rule.state_channels) + 1


def lookup_prepare_nodes(b: Builder, t: LookupTables, fresh: bool, wrap: bool = False, out: str = "state") -> None:
    """From "codes" [and "state_codes"] to `out` (B, 1, L) float digits: one lookup by code and
    state code (the zero state's, before a first step). wrap: unused (a digit reads no neighbour),
    taken as cf's prepare takes it (builder.window calls either)."""
    index = b.op("Mul", [b.op("Cast", ["codes"], to=INT32), b.const(np.int32(t.rule.zero_code + 1))])
    state_code = b.const(np.int32(t.rule.zero_code)) if fresh else b.op("Cast", ["state_codes"], to=INT32)
    index = b.op("Add", [index, state_code])
    b.op("Unsqueeze", [lookup_flat(b, t.digit_of_codes, index, b.op("Shape", [index])), b.const([1])], out)


def _lookup_step(b: Builder, t: LookupTables, state: str, wrap: int, packed: bool, steps: int = 1) -> tuple[str, str]:
    """One step (steps 1) or a block of `steps` -> (the new state, the index it read: the block's
    block_last's). wrap: a ring's rows, at least `steps` cells long."""
    left, right = t.reach(steps)
    read = f"read_{left}_{right}"
    if read not in b.inits:
        width = left + right + 1
        b.const(np.array([[[t.n ** (width - 1 - i) for i in range(width)]]], np.float32), read)
    if wrap:  # the ring's cells it reads past each end
        state = wrap_ring(b, state, left=left, right=right)
    index = b.op("Cast", [b.op("Conv", [state, read], pads=[0, 0] if wrap else [left, right])], to=INT32)
    table = "table" if steps == 1 else f"block_table_{steps}"
    if packed:  # (1, 1, cells): the table's rank, as GatherElements wants
        return b.op("GatherElements", [table, index], axis=2), index
    return b.op("Gather", [_flat(b, table), index]), index


def _flat(b: Builder, table: str) -> str:
    """A table input as one axis, for Gather (made once a graph)."""
    flat = f"flat_{table}"
    if not any(flat in node.output for node in b.nodes):
        b.op("Reshape", [table, b.const(np.array([-1], np.int64))], flat)
    return flat


def _lookup_unroll(b: Builder, t: LookupTables, k: int, mode: str, packed: bool,
                   wrap: int) -> tuple[str, str | None, str | None]:
    """K steps (modes count, owned, hot) in the lookups of LookupTables.plan. -> (state, hot: the
    cells the last step changed (hot mode), changed_at (B', 1, cells) float: the last step 1..K
    that changed each cell, 0 if none (count, owned)). A block's changes are a lookup in its
    block_last (hot: whether that is its last step). Writes state_out."""
    state, hot, changed_at, done = "state", None, b.const(np.float32(0)), 0
    plan = t.plan(k, wrap)
    for i, steps in enumerate(plan):
        nxt, index = _lookup_step(b, t, state, wrap, packed, steps)
        if mode == "hot" and i < len(plan) - 1:  # hot reads only the last lookup's changes
            pass
        elif steps == 1:
            moved = b.op("Not", [b.op("Equal", [nxt, state])])
            if mode == "hot":
                hot = moved
            else:
                changed_at = b.op("Where", [moved, b.const(np.float32(done + 1)), changed_at])
        else:
            table = f"block_last_{steps}"
            last = b.op("GatherElements", [table, index], axis=2) if packed else b.op("Gather", [_flat(b, table), index])
            if mode == "hot":
                hot = b.op("Equal", [last, b.const(np.float32(steps))])
            else:
                changed_at = b.op("Max", [changed_at, b.op("Add", [last, b.const(np.float32(done))])])
        state, done = nxt, done + steps
    b.op("Identity", [state], "state_out")
    return state, hot, changed_at


def _lookup_advance_nodes(b: Builder, t: LookupTables, k: int, packed: bool, mode: str, wrap: int) -> None:
    """From "state", the tables (and by mode "owned", "rows", "budget") to "state_out" and "hot"
    or "last". A digit is its own code: each cell's last change is kept by comparing digits, three
    operators a step (a block's is a lookup in its block_last: three), and reduced per row once.
    Budget rows run single steps (a row's budget may end inside a block)."""
    if mode == "budget":
        _, _, changed_at = unroll(b, k, mode, lambda s: _lookup_step(b, t, s, wrap, packed)[0], lambda s: s, [-1, 1, 1])
    else:
        _, hot, changed_at = _lookup_unroll(b, t, k, mode, packed, wrap)
    if mode == "hot":
        b.op("Squeeze", [hot, b.const([1])], "hot")
        return
    if mode == "owned":
        changed_at = b.op("Mul", [changed_at, "owned"])
    if packed:  # (1, 1, cells) -> rows (B, L)
        b.op("ReduceMax", [b.op("Reshape", [changed_at, "rows"]), b.const([1])], "last", keepdims=0)
    else:
        b.op("ReduceMax", [changed_at, b.const([1, 2])], "last", keepdims=0)


def tables_read(b: Builder, tables: dict[str, np.ndarray]) -> list[onnx.ValueInfoProto]:
    """The inputs among `tables` (LookupTables.inputs, ClassTables.inputs) that the nodes built
    so far read."""
    used = {i for node in b.nodes for i in node.input}
    return [tensor_io(name, FLOAT, list(table.shape)) for name, table in tables.items() if name in used]


def lookup_finish_nodes(b: Builder, t: LookupTables, state: str, state_codes: str, readout: bool) -> None:
    """From `state` (digits) to `state_codes` [and "classes"]: a digit names its cell's code and
    state value, so both are lookups by digit."""
    rule = t.rule
    digit = b.op("Cast", [b.op("Squeeze", [state, b.const([1])])], to=INT32)
    shape = b.op("Shape", [digit])
    v = _lookup_v(rule)
    value, cell_code = t.pairs % v, t.pairs // v
    state_code = np.where(value == 0, rule.zero_code, value - 1)
    b.op("Cast", [lookup_flat(b, state_code.astype(np.int32), digit, shape)], state_codes, to=code_type(rule))
    if readout:  # int32 tables: uint8 only at a graph's edge (TensorRT)
        classes = rule.readout_table()[cell_code, state_code].astype(np.int32)
        b.op("Cast", [lookup_flat(b, classes, digit, shape)], "classes", to=UINT8)


def _lookup_cells(packed: bool) -> list:
    return ["cells"] if packed else ["length"]


def lookup_prepare(t: LookupTables, packed: bool, fresh: bool) -> onnx.ModelProto:
    """codes (B, L) uint8 [, state_codes] -> state (B, 1, L) float digits (packed: B = 1; rings
    and lines alike: a digit reads no neighbour)."""
    b = Builder("sead_lookup_prepare")
    lookup_prepare_nodes(b, t, fresh)
    cells = _lookup_cells(packed)
    inputs = [tensor_io("codes", UINT8, ["batch", *cells])]
    if not fresh:
        inputs.append(tensor_io("state_codes", code_type(t.rule), ["batch", *cells]))
    return b.model(inputs, [tensor_io("state", FLOAT, ["batch", 1, *cells])])


def lookup_advance(t: LookupTables, k: int, packed: bool, mode: str, wrap: int = 0) -> onnx.ModelProto:
    """K steps; modes, inputs and outputs as cf_advance, with the state and the tables it reads
    (LookupTables.inputs) in place of features, threshold and state. wrap: rings, whose rows are
    at least this many cells (0: lines); blocks run on rings where wrap >= block_steps."""
    if packed and (mode == "budget" or wrap):
        raise ValueError("only rows that end in an empty cell and need no budget are packed")
    b = Builder(f"sead_lookup_advance_{mode}_{k}")
    _lookup_advance_nodes(b, t, k, packed, mode, wrap)
    cells = _lookup_cells(packed)
    return advance_model(b, mode, packed, cells, [tensor_io("state", FLOAT, ["batch", 1, *cells]),
                                                   *tables_read(b, t.inputs)], 1)


def lookup_finish(t: LookupTables, packed: bool, readout: bool = True) -> onnx.ModelProto:
    """codes (B, L) uint8, state (B, 1, L) digits -> state_codes (B, L) [, classes (B, L) uint8].
    The digits hold the codes: "codes" is unread, taken so that every layout's finish has the same
    inputs."""
    b = Builder("sead_lookup_finish")
    lookup_finish_nodes(b, t, "state", "state_codes", readout)
    cells = _lookup_cells(packed)
    outputs = [tensor_io("state_codes", code_type(t.rule), ["batch", *cells])]
    if readout:
        outputs.append(tensor_io("classes", UINT8, ["batch", *cells]))
    return b.model([tensor_io("codes", UINT8, ["batch", *cells]), tensor_io("state", FLOAT, ["batch", 1, *cells])], outputs)


def lookup_window(t: LookupTables, k: int, mode: str, fresh: bool) -> onnx.ModelProto:
    """Tile windows in one graph, as cf_window (same inputs and outputs, and the tables it reads),
    in the lookup form."""
    return window(t.rule, k, mode, fresh, f"sead_lookup_window_{mode}_{k}",
                   lambda b, _, fresh, wrap: lookup_prepare_nodes(b, t, fresh, wrap),
                   lambda b: _lookup_advance_nodes(b, t, k, True, mode, False),
                   lambda b, _, state, state_codes, readout: lookup_finish_nodes(b, t, state, state_codes, readout),
                   extra_inputs=lambda b: tables_read(b, t.inputs))
