"""The graphs every engine runs, built from the rule's weights (runtime/rule.py). numpy + onnx only.

Three graphs per batch of rows, so that codes go in and classes come out and the state stays on
the device between calls:

    prepare   codes (uint8 per cell) [+ state codes]  ->  the problem's share of the first layer,
              computed once per batch, the mask, and the working state
    advance   K steps of the rule on the working state (one graph per K), with what the loop needs
              back: per-row counts of changing steps, or the cells that changed at the last step
    finish    the working state -> state codes (uint8/16 per cell) and the readout's classes

The problem never changes during a solve, so its share of the first convolution (most of its
input channels) is computed once in `prepare` instead of at every step, and the readout runs once
at the end. Three layouts of the same rule, and a fourth for tile windows:

- "lookup" (tape rules whose whole step fits a table, Rule.step_table): one number a cell, and a
  step is a lookup of the next in a table of every neighbourhood; where the numbers are few, one
  lookup makes several steps. ONNX Runtime's CPU provider runs this form fastest where it exists.
- "cf" (channels first, sign states): rows (B, C, L) or grids (B, C, H, W); neighbours through a
  convolution over the state channels. Rows that each end in an empty cell are packed end to end,
  (1, C, B*L): one long convolution instead of B short ones (what lies beyond a row is what lies
  beyond a tape, an empty cell). The CPU's form for grids.
- "classes" (tile windows of a lookup rule, runtime/class_blocks.py): blocks of many steps a
  lookup, from a state of a few channels that hold the classes of each cell's number that the
  blocks read.
- "cl" (channels last, flat): the cells of a batch as one list (N, C) plus one empty cell at the
  end (index N), with a neighbour table (N + 1, taps) int64 made by the host once per batch shape
  (runtime/layout.py): any topology (tapes, rings, grids, tile windows) is the same graph. A
  sign state's neighbours are gathered and multiplied (a skinny matrix product); a symbol state is
  one class per cell, so its part of the first layer is a table lookup per neighbour instead of a
  convolution over `classes` one-hot channels.

Exactness: cf and cl sum the rule's products in another order than the exported convolution,
which can flip a decision only where its margin is within float rounding (export/verify.py checks
the margins of every form); the lookup form's table is refused where any entry could. fp32
throughout; engines must not use TF32 or fp16.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .rule import STEP_TABLE_ENTRIES, Rule

if TYPE_CHECKING:
    from .class_blocks import ClassTables

OPSET = 18
FLOAT, INT32, INT64, UINT8, BOOL = (TensorProto.FLOAT, TensorProto.INT32, TensorProto.INT64, TensorProto.UINT8,
                                    TensorProto.BOOL)
CODE_TYPES = {np.uint8: TensorProto.UINT8, np.uint16: TensorProto.UINT16, np.uint32: TensorProto.UINT32}
MS_DOMAIN = "com.microsoft"  # ONNX Runtime's own operators (FusedConv), used only where asked for


class _Builder:
    """Nodes and constants of one graph, with fresh names."""

    def __init__(self, name: str):
        self.name, self.nodes, self.inits, self.count = name, [], {}, 0

    def const(self, value, name: str | None = None) -> str:
        value = np.asarray(value)
        if value.dtype == np.float64:
            value = value.astype(np.float32)
        key = name or f"c{len(self.inits)}"
        self.inits[key] = value
        return key

    def op(self, op_type: str, inputs: list[str], out: str | None = None, domain: str = "", **attrs) -> str:
        self.count += 1
        out = out or f"t{self.count}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"n{self.count}_{op_type}", domain=domain,
                                           **attrs))
        return out

    def model(self, inputs, outputs) -> onnx.ModelProto:
        inits = [numpy_helper.from_array(v, k) for k, v in self.inits.items()]
        graph = helper.make_graph(self.nodes, self.name, inputs, outputs, inits)
        opsets = [helper.make_opsetid("", OPSET)]
        if any(n.domain == MS_DOMAIN for n in self.nodes):
            opsets.append(helper.make_opsetid(MS_DOMAIN, 1))
        model = helper.make_model(graph, opset_imports=opsets, producer_name="sead.runtime")
        model.ir_version = 9
        onnx.checker.check_model(model)
        return model


def _io(name: str, elem: int, dims: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, dims)


def _code_type(rule: Rule) -> int:
    return CODE_TYPES[rule.code_dtype]


# -- cf: channels first, sign states -------------------------------------------------------------
# The working state is b = (s + mask) / 2 per channel: 1 or 0 on a real cell (s = +1 or -1), 0 on
# an empty one, 0.5 on a real cell before its first step (s = 0). Then the rule's state part is
# conv(s) = conv(2b) - conv(mask) (the second is fixed: prepare folds it into the features), and
# the next state is one comparison and a cast. The comparison W_out h + b_out > 0 is made as
# W_out h > -b_out (the same for finite floats: a rounded sum is never zero unless the exact one
# is), against a per-cell threshold that is +1e30 on an empty cell, so it stays 0. ONNX Runtime's
# CPU provider runs this much faster than a select between +mask and -mask.

FAR = np.float32(1e30)  # an empty cell's threshold: no finite rule output passes it
TRIPLE_TABLE_ELEMENTS = 1 << 22  # the problem share by each row's (left, own, right) codes, if its tables are this small


def _cf_cells(rule: Rule, packed: bool) -> list:
    if packed:
        return ["cells"]
    return ["length"] if rule.rank == 1 else ["height", "width"]


def _cf_pads(rule: Rule, wrap: bool) -> list[int]:
    return [0] * 2 * rule.rank if wrap else [1] * 2 * rule.rank


def _cf_wrap(b: _Builder, x: str, axis: int = 2, left: int = 1, right: int = 1) -> str:
    """A ring's rows with their last `left` cells before the first and their first `right` after
    the last (along `axis`: a state's cells, or 1 for codes (B, L)); rows of at least that many."""
    parts = [x]
    if left:
        parts.insert(0, b.op("Slice", [x, b.const([-left]), b.const([np.iinfo(np.int64).max]), b.const([axis])]))
    if right:
        parts.append(b.op("Slice", [x, b.const([0]), b.const([right]), b.const([axis])]))
    return b.op("Concat", parts, axis=axis)


def _cf_conv(b: _Builder, rule: Rule, wrap: bool, x: str, w: np.ndarray, bias: str | None = None) -> str:
    """The rule's width-3 (3x3) convolution over x, zeros (or, wrapped, the ring) beyond each row's ends."""
    x = _cf_wrap(b, x) if wrap else x
    return b.op("Conv", [x, b.const(w)] + ([bias] if bias else []), pads=_cf_pads(rule, wrap))


def _cf_problem(b: _Builder, rule: Rule, codes: str) -> str:
    """codes (B, *S) uint8 -> the exported step's problem tensor (B, C_in, *S) float32: the mask,
    then the one-hot symbol (code 1 + s)."""
    c = b.op("Unsqueeze", [b.op("Cast", [codes], to=INT64), b.const([1])])  # (B, 1, *S)
    index = np.arange(rule.input_channels, dtype=np.int64).reshape(1, -1, *[1] * rule.rank)
    index[0, 0] = -1  # channel 0 is the mask, filled below
    onehot = b.op("Cast", [b.op("Equal", [c, b.const(index)])], to=FLOAT)
    mask = b.op("Cast", [b.op("Greater", [c, b.const(np.int64(0))])], to=FLOAT)
    rest = b.op("Slice", [onehot, b.const([1]), b.const([rule.input_channels]), b.const([1])])
    return b.op("Concat", [mask, rest], axis=1)


def _code_triples(b: _Builder, rule: Rule, codes: str, wrap: bool) -> str:
    """codes (B, L) int64 -> (B, L) int64: (left C_in + own) C_in + right, empty beyond the ends
    (or, wrapped, around the ring)."""
    padded = _cf_wrap(b, codes, axis=1) if wrap else b.op("Pad", [codes, b.const(np.array([0, 1, 0, 1], np.int64))])
    return _triples(b, rule, padded)


def _triples(b: _Builder, rule: Rule, padded: str) -> str:
    """(..., N + 2) int64 codes -> (..., N): (left C_in + own) C_in + right along the last axis."""
    left, own, right = (b.op("Slice", [padded, b.const([i]), b.const([i - 2 if i < 2 else np.iinfo(np.int64).max]),
                                       b.const([-1])]) for i in range(3))
    c = b.const(np.int64(rule.input_channels))
    return b.op("Add", [b.op("Mul", [b.op("Add", [b.op("Mul", [left, c]), own]), c]), right])


def _cf_channels(rule: Rule, a: np.ndarray) -> np.ndarray:
    return a.reshape(1, -1, *[1] * rule.rank).astype(np.float32)


def cf_prepare(rule: Rule, packed: bool, fresh: bool, wrap: bool = False) -> onnx.ModelProto:
    """codes (B, *S) uint8 [, state_codes (B, *S)] -> features (B, H, *S) (the problem's share of
    the first layer with its bias, less conv(mask)), threshold (B, C_s, *S) (-b_out, or +1e30 on an
    empty cell) and state (B, C_s, *S) in the 0/1 form above. Packed: B = 1, S = (cells,).
    wrap: each row is a whole ring (a ring task's whole problems; its tile windows are not)."""
    b = _Builder("sead_cf_prepare")
    _cf_prepare_nodes(b, rule, fresh, wrap)
    inputs = [_io("codes", UINT8, ["batch", *_cf_cells(rule, packed)])]
    if not fresh:
        inputs.append(_io("state_codes", _code_type(rule), ["batch", *_cf_cells(rule, packed)]))
    cells = _cf_cells(rule, packed)
    outputs = [_io("features", FLOAT, ["batch", rule.hidden, *cells]),
               _io("threshold", FLOAT, ["batch", rule.state_channels, *cells]),
               _io("state", FLOAT, ["batch", rule.state_channels, *cells])]
    return b.model(inputs, outputs)


def _cf_prepare_nodes(b: _Builder, rule: Rule, fresh: bool, wrap: bool) -> None:
    """cf_prepare's nodes: from "codes" [and "state_codes"] to "features", "threshold", "state"."""
    assert rule.state_code == "sign"
    codes = b.op("Cast", ["codes"], to=INT64)  # (B, *S)
    mask = b.op("Unsqueeze", [b.op("Cast", [b.op("Greater", [codes, b.const(np.int64(0))])], to=FLOAT),
                              b.const([1])])  # (B, 1, *S)
    if rule.taps // 3 * rule.input_channels ** 3 * rule.hidden <= TRIPLE_TABLE_ELEMENTS and not (wrap and rule.rank > 1):
        # a cell's share reads the code triples of its neighbourhood's rows: one lookup per row,
        # the fold included
        b.op("Transpose", [_problem_share(b, rule, codes, wrap)], "features", perm=_channels_first(rule))
    else:
        problem = _cf_problem(b, rule, "codes")
        w_state = rule.w_in[:, rule.input_channels:]
        features = _cf_conv(b, rule, wrap, problem, rule.w_in[:, : rule.input_channels], b.const(rule.b_in))
        folded = _cf_conv(b, rule, wrap, mask, w_state.sum(axis=1, keepdims=True))  # conv(mask) of the state part
        b.op("Sub", [features, folded], "features")
    far = b.op("Mul", [b.op("Sub", [mask, b.const(np.float32(1))]), b.const(FAR)])  # 0 real, -1e30 empty
    b.op("Sub", [b.op("Neg", [far]), b.const(_cf_channels(rule, rule.b_out))], "threshold")
    if fresh:
        b.op("Mul", [b.op("Mul", [mask, b.const(np.float32(0.5))]),
                     b.const(np.ones((1, rule.state_channels, *[1] * rule.rank), np.float32))], "state")
    else:
        # each code's working values, one lookup per cell: (B, *S, C_s) -> (B, C_s, *S)
        values = b.op("Gather", [b.const(_cf_state_table(rule)), b.op("Cast", ["state_codes"], to=INT64)])
        b.op("Mul", [b.op("Transpose", [values], perm=_channels_first(rule)), mask], "state")


def _channels_first(rule: Rule) -> list[int]:
    """The Transpose permutation from (B, *S, C) to (B, C, *S)."""
    return [0, 1 + rule.rank, *range(1, 1 + rule.rank)]


# Tables are looked up a row of channels at a time (Gather on axis 0, then one transpose): ONNX
# Runtime's CPU Gather copies each index's block, so a block of C values costs about what one
# value does, and lookups along axis 1 (one value per channel) took three times as long.

def _cf_state_table(rule: Rule) -> np.ndarray:
    """(2^C_s + 1, C_s) float32: the working value of each channel of a real cell with state code
    z (its bit c), 0.5 in every channel at zero_code (before the first step)."""
    table = np.full((rule.zero_code + 1, rule.state_channels), 0.5, np.float32)
    table[: rule.zero_code] = rule.code_bits
    return table


def _problem_share(b: _Builder, rule: Rule, codes: str, wrap: bool) -> str:
    """codes (B, *S) int64 -> (B, *S, H) float: the problem's share of the first layer with its
    bias, less conv(mask) (Rule.problem_table(less_state_mask=True)): a tape's one lookup of its
    code triples; a grid's three, one per row of the neighbourhood, summed."""
    tables = rule.problem_table(less_state_mask=True)  # (R, C_in^3, H)
    if rule.rank == 1:
        return b.op("Gather", [b.const(tables[0]), _code_triples(b, rule, codes, wrap)])
    padded = b.op("Pad", [codes, b.const(np.array([0, 1, 1, 0, 1, 1], np.int64))])  # (B, H + 2, W + 2)
    triples = _triples(b, rule, padded)  # (B, H + 2, W): each row's (left, own, right)
    share = None
    for dy, table in enumerate(tables):
        rows = b.op("Slice", [triples, b.const([dy]), b.const([dy - 2 if dy < 2 else np.iinfo(np.int64).max]),
                              b.const([1])])
        part = b.op("Gather", [b.const(table), rows])
        share = part if share is None else b.op("Add", [share, part])
    return share


def _cf_step(b: _Builder, rule: Rule, state: str, wrap: bool, fused: bool) -> str:
    if "w_state2" not in b.inits:
        b.const(2 * rule.w_in[:, rule.input_channels:], "w_state2")
        b.const(rule.w_out.reshape(*rule.w_out.shape, *[1] * rule.rank), "w_out")
    x = _cf_wrap(b, state) if wrap else state
    if fused:  # relu(conv + 0 + features) as one node instead of three (its own summation order)
        if "zero_bias" not in b.inits:
            b.const(np.zeros(rule.hidden, np.float32), "zero_bias")
        hidden = b.op("FusedConv", [x, "w_state2", "zero_bias", "features"], domain=MS_DOMAIN, activation="Relu",
                      pads=_cf_pads(rule, wrap))
    else:
        hidden = b.op("Relu", [b.op("Add", [b.op("Conv", [x, "w_state2"], pads=_cf_pads(rule, wrap)), "features"])])
    return b.op("Cast", [b.op("Greater", [b.op("Conv", [hidden, "w_out"]), "threshold"])], to=FLOAT)


def _unroll(b: _Builder, k: int, mode: str, step, code_of, budget_shape: list[int], rows_moved=None):
    """K copies of `step` from the input "state"; writes state_out. -> (the last state, the one
    before it, changed_at: per cell the last step 1..K that changed it (0 if none), None in hot
    mode). budget mode: a row steps while its budget (reshaped to budget_shape) exceeds the step.
    rows_moved (the cf layout): moved cells (B, C, *S) bool -> (B,) bool; then the
    third value is each row's last changing step (B,), kept step by step: a comparison of the
    states and a reduction a step, which ran 17% faster on a CPU than a code per cell."""
    state, previous, changed_at = "state", None, None
    if mode == "budget":
        budget = b.op("Reshape", ["budget", b.const(budget_shape)])
    code = code_of(state) if mode != "hot" and rows_moved is None else None
    for i in range(k):
        nxt = step(state)
        if mode == "budget":
            nxt = b.op("Where", [b.op("Greater", [budget, b.const(np.float32(i))]), nxt, state])
        if mode != "hot":
            if rows_moved is not None:
                moved = rows_moved(b.op("Not", [b.op("Equal", [nxt, state])]))
            else:
                new_code = code_of(nxt)
                moved = b.op("Not", [b.op("Equal", [new_code, code])])
                code = new_code
            changed_at = b.op("Where", [moved, b.const(np.float32(i + 1)), changed_at or b.const(np.float32(0))])
        previous, state = state, nxt
    b.op("Identity", [state], "state_out")
    return state, previous, changed_at


def cf_advance(rule: Rule, k: int, packed: bool, mode: str, wrap: bool = False,
               fused: bool = False) -> onnx.ModelProto:
    """K steps. inputs features, threshold, state (from prepare) and, by mode:

        count       (rows int64 [B, L] when packed) -> state_out, last (B,) float: the last step
                    of the K that changed the row (0 if none): its count of changing steps
        budget      budget (B,) float: row b runs min(K, budget[b]) steps, then holds
                    -> state_out, last (as count)
        hot         -> state_out, hot (B, *S) bool: the cells that changed at step K
        owned       owned (B, 1, *S) float, 1 where a change counts -> state_out, last (as count,
                    over owned cells: tile windows, whose halos change too)

    `count` without budgets serves whole problems of a fixed-point task (a row that settles stays
    settled, so running past its budget changes nothing the loop reads). fused: the first layer as
    ONNX Runtime's FusedConv (com.microsoft), what `ort` runs; export/verify.py checks that form."""
    if packed and (mode == "budget" or wrap):
        raise ValueError("only rows that end in an empty cell and need no budget are packed")
    b = _Builder(f"sead_cf_advance_{mode}_{k}")
    _cf_advance_nodes(b, rule, k, packed, mode, wrap, fused)
    cells = _cf_cells(rule, packed)
    inputs = [_io("features", FLOAT, ["batch", rule.hidden, *cells]),
              _io("threshold", FLOAT, ["batch", rule.state_channels, *cells]),
              _io("state", FLOAT, ["batch", rule.state_channels, *cells])]
    return _advance_model(b, mode, packed, cells, inputs, rule.state_channels)


def _advance_model(b: _Builder, mode: str, packed: bool, cells: list, inputs: list, channels: int) -> onnx.ModelProto:
    """A channels-first advance graph's inputs by mode, and its outputs (cf and lookup alike)."""
    state_io = _io("state_out", FLOAT, ["batch", channels, *cells])
    if mode == "hot":
        return b.model(inputs, [state_io, _io("hot", BOOL, ["batch", *cells])])
    if mode == "owned":
        inputs.append(_io("owned", FLOAT, ["batch", 1, *cells]))
    if packed:
        inputs.append(_io("rows", INT64, [2]))
    if mode == "budget":
        inputs.append(_io("budget", FLOAT, ["rows"]))
    return b.model(inputs, [state_io, _io("last", FLOAT, ["rows"])])


def _rows_moved(b: _Builder, rule: Rule, mode: str, packed: bool):
    """-> a function from moved cells (B, C, *S) bool to (B,) bool: whether a cell of each row
    (an owned one, in mode owned) changed. Packed rows are cut by "rows" (B, L)."""
    owned = b.op("Cast", ["owned"], to=BOOL) if mode == "owned" else None

    def rows(moved: str) -> str:
        if owned is not None:
            moved = b.op("And", [moved, owned])
        moved = b.op("Cast", [moved], to=FLOAT)
        if packed:
            moved = b.op("Reshape", [b.op("ReduceMax", [moved, b.const([1])], keepdims=0), "rows"])  # (B, L)
            return b.op("Greater", [b.op("ReduceMax", [moved, b.const([1])], keepdims=0), b.const(np.float32(0))])
        return b.op("Greater", [b.op("ReduceMax", [moved, b.const(list(range(1, 2 + rule.rank)))], keepdims=0),
                                b.const(np.float32(0))])
    return rows


def _cf_advance_nodes(b: _Builder, rule: Rule, k: int, packed: bool, mode: str, wrap: bool, fused: bool) -> None:
    """cf_advance's nodes: from "features", "threshold", "state" (and by mode "owned", "rows",
    "budget") to "state_out" and "hot" or "last"."""
    state, previous, last = _unroll(b, k, mode, lambda s: _cf_step(b, rule, s, wrap, fused), None,
                                    [-1, 1, *[1] * rule.rank], _rows_moved(b, rule, mode, packed))
    if mode == "hot":
        diff = b.op("ReduceMax", [b.op("Abs", [b.op("Sub", [state, previous])]), b.const([1])], keepdims=0)
        b.op("Greater", [diff, b.const(np.float32(0))], "hot")
    else:
        b.op("Identity", [last], "last")


def cf_finish(rule: Rule, packed: bool, readout: bool = True) -> onnx.ModelProto:
    """codes (B, *S) uint8, state (B, C_s, *S) -> state_codes (B, *S), and with readout classes
    (B, *S) uint8. The readout runs channels last (the cl readout): its problem part is a table
    lookup."""
    b = _Builder("sead_cf_finish")
    _cf_finish_nodes(b, rule, "state", "state_codes", readout)
    cells_axes = _cf_cells(rule, packed)
    outputs = [_io("state_codes", _code_type(rule), ["batch", *cells_axes])]
    if readout:
        outputs.append(_io("classes", UINT8, ["batch", *cells_axes]))
    return b.model([_io("codes", UINT8, ["batch", *cells_axes]),
                    _io("state", FLOAT, ["batch", rule.state_channels, *cells_axes])], outputs)


def _cf_finish_nodes(b: _Builder, rule: Rule, state: str, state_codes: str, readout: bool) -> None:
    """cf_finish's nodes: from "codes" and `state` to `state_codes` [and "classes"]."""
    codes = b.op("Cast", ["codes"], to=INT64)
    real = b.op("Greater", [codes, b.const(np.int64(0))])
    first = b.op("Squeeze", [b.op("Slice", [state, b.const([0]), b.const([1]), b.const([1])]), b.const([1])])
    fresh = b.op("Equal", [first, b.const(np.float32(0.5))])  # before the first step (all channels alike)
    bits = b.op("Squeeze", [b.op("Conv", [state, b.const(_cf_channels(rule, 2.0 ** np.arange(rule.state_channels)))]),
                            b.const([1])])
    code = b.op("Where", [b.op("And", [real, b.op("Not", [fresh])]), bits, b.const(np.float32(rule.zero_code))])
    b.op("Cast", [code], state_codes, to=_code_type(rule))
    if readout:
        _readout_lookup(b, rule, codes, b.op("Cast", [code], to=INT64))


def cf_window(rule: Rule, k: int, mode: str, fresh: bool, fused: bool = False) -> onnx.ModelProto:
    """Tile windows of a tape in one graph, prepare, K steps and finish, for hosts where each run
    has a cost of its own (the CPU provider): window_codes (B, L) uint8 [, window_state_codes
    (B, L)] [, window_owned (B, L) float] -> window_state_codes_out (B, L) and, by mode (hot or
    owned, as cf_advance), window_hot (B, L) bool or last (B,) float. Rows are packed inside."""
    return _window(rule, k, mode, fresh, f"sead_cf_window_{mode}_{k}", _cf_prepare_nodes,
                   lambda b: _cf_advance_nodes(b, rule, k, packed=True, mode=mode, wrap=False, fused=fused),
                   _cf_finish_nodes)


def _window(rule: Rule, k: int, mode: str, fresh: bool, name: str, prepare, advance, finish,
            extra_inputs=lambda b: []) -> onnx.ModelProto:
    assert rule.rank == 1 and mode in ("hot", "owned")
    b = _Builder(name)
    flat = b.const(np.array([1, -1], np.int64))
    b.op("Reshape", ["window_codes", flat], "codes")
    b.op("Shape", ["window_codes"], "rows")
    if not fresh:
        b.op("Reshape", ["window_state_codes", flat], "state_codes")
    if mode == "owned":
        b.op("Reshape", ["window_owned", b.const(np.array([1, 1, -1], np.int64))], "owned")
    prepare(b, rule, fresh, False)
    advance(b)
    finish(b, rule, "state_out", "packed_state_codes", False)
    b.op("Reshape", ["packed_state_codes", "rows"], "window_state_codes_out")
    inputs = [_io("window_codes", UINT8, ["rows", "cells"])]
    if not fresh:
        inputs.append(_io("window_state_codes", _code_type(rule), ["rows", "cells"]))
    outputs = [_io("window_state_codes_out", _code_type(rule), ["rows", "cells"])]
    if mode == "hot":
        b.op("Reshape", ["hot", "rows"], "window_hot")
        outputs.append(_io("window_hot", BOOL, ["rows", "cells"]))
    else:
        inputs.append(_io("window_owned", FLOAT, ["rows", "cells"]))
        outputs.append(_io("last", FLOAT, ["rows"]))
    return b.model(inputs + extra_inputs(b), outputs)


def _readout_lookup(b: _Builder, rule: Rule, codes: str, state_codes: str) -> None:
    """classes (uint8) of sign-state cells from their codes and state codes (int64, same shape):
    one lookup in Rule.readout_table."""
    width = np.int64((1 << rule.state_channels) + 1)
    index = b.op("Add", [b.op("Mul", [codes, b.const(width)]), state_codes])
    table = rule.readout_table().reshape(-1).astype(np.int32)  # uint8 only at a graph's edge (TensorRT)
    b.op("Cast", [_lookup_flat(b, table, index, b.op("Shape", [index]))], "classes", to=UINT8)


def _lookup_flat(b: _Builder, table: np.ndarray, index: str, shape: str) -> str:
    """table[index], table 1-D, for an integer index of any shape (`shape`, its Shape): one
    GatherElements over the flattened index, which ONNX Runtime's CPU provider ran in a third of
    Gather's time a value. Outside advance graphs only (Shape)."""
    flat = b.op("Reshape", [index, b.const(np.array([-1], np.int64))])
    return b.op("Reshape", [b.op("GatherElements", [b.const(table), flat], axis=0), shape])


# -- lookup: the whole step as one table lookup (tape rules with a Rule.step_table) ----------------
# Laid out as cf with one channel: rows (B, 1, L), packed end to end where cf packs. A cell's state
# is one number, its digit: the index of its pair p = s + V c (its state value s: 0 for the zero
# state, and on every empty cell, else 1 + its code; and its own problem code c, which never
# changes) among the n pairs a run can reach, ascending, so digit 0 is an empty cell. A step is a
# convolution reading the three digits around each cell as one number ((l n + o) n + r, below 2^24:
# exact in float32 in any order), a cast, and a lookup in the table of every neighbourhood's next
# digit: three operators, none of the rule's arithmetic left to round. Where n is small, a block
# table does the same for m steps at once from the digits within m cells (a cell's state after m
# steps depends on no others; on those on one side only where the step reads one neighbour, as
# parity's does), and a second one gives the last of those steps that changed the cell, so that
# step counts stay exact. There are blocks of every length up to m, so that K steps take K // m
# blocks of m and one lookup of the remainder. Tables are inputs, not constants: an engine holds
# them once for all its graphs. Packed rows look up with GatherElements, which ONNX Runtime's CPU provider ran in a
# third of Gather's time a cell; it wants the table's rank and leading dims, (1, 1, entries), so
# B unpacked rows (rings, budgets) use Gather. Budget rows run one step at a time.

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


def _lookup_prepare_nodes(b: _Builder, t: LookupTables, fresh: bool, wrap: bool = False, out: str = "state") -> None:
    """From "codes" [and "state_codes"] to `out` (B, 1, L) float digits: one lookup by code and
    state code (the zero state's, before a first step). wrap: unused (a digit reads no neighbour),
    taken as cf's prepare takes it (graph._window calls either)."""
    index = b.op("Mul", [b.op("Cast", ["codes"], to=INT32), b.const(np.int32(t.rule.zero_code + 1))])
    state_code = b.const(np.int32(t.rule.zero_code)) if fresh else b.op("Cast", ["state_codes"], to=INT32)
    index = b.op("Add", [index, state_code])
    b.op("Unsqueeze", [_lookup_flat(b, t.digit_of_codes, index, b.op("Shape", [index])), b.const([1])], out)


def _lookup_step(b: _Builder, t: LookupTables, state: str, wrap: int, packed: bool, steps: int = 1) -> tuple[str, str]:
    """One step (steps 1) or a block of `steps` -> (the new state, the index it read: the block's
    block_last's). wrap: a ring's rows, at least `steps` cells long."""
    left, right = t.reach(steps)
    read = f"read_{left}_{right}"
    if read not in b.inits:
        width = left + right + 1
        b.const(np.array([[[t.n ** (width - 1 - i) for i in range(width)]]], np.float32), read)
    if wrap:  # the ring's cells it reads past each end
        state = _cf_wrap(b, state, left=left, right=right)
    index = b.op("Cast", [b.op("Conv", [state, read], pads=[0, 0] if wrap else [left, right])], to=INT32)
    table = "table" if steps == 1 else f"block_table_{steps}"
    if packed:  # (1, 1, cells): the table's rank, as GatherElements wants
        return b.op("GatherElements", [table, index], axis=2), index
    return b.op("Gather", [_flat(b, table), index]), index


def _flat(b: _Builder, table: str) -> str:
    """A table input as one axis, for Gather (made once a graph)."""
    flat = f"flat_{table}"
    if not any(flat in node.output for node in b.nodes):
        b.op("Reshape", [table, b.const(np.array([-1], np.int64))], flat)
    return flat


def _lookup_unroll(b: _Builder, t: LookupTables, k: int, mode: str, packed: bool,
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


def _lookup_advance_nodes(b: _Builder, t: LookupTables, k: int, packed: bool, mode: str, wrap: int) -> None:
    """From "state", the tables (and by mode "owned", "rows", "budget") to "state_out" and "hot"
    or "last". A digit is its own code: each cell's last change is kept by comparing digits, three
    operators a step (a block's is a lookup in its block_last: three), and reduced per row once.
    Budget rows run single steps (a row's budget may end inside a block)."""
    if mode == "budget":
        _, _, changed_at = _unroll(b, k, mode, lambda s: _lookup_step(b, t, s, wrap, packed)[0], lambda s: s, [-1, 1, 1])
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


def _tables_read(b: _Builder, tables: dict[str, np.ndarray]) -> list[onnx.ValueInfoProto]:
    """The inputs among `tables` (LookupTables.inputs, ClassTables.inputs) that the nodes built
    so far read."""
    used = {i for node in b.nodes for i in node.input}
    return [_io(name, FLOAT, list(table.shape)) for name, table in tables.items() if name in used]


def _lookup_finish_nodes(b: _Builder, t: LookupTables, state: str, state_codes: str, readout: bool) -> None:
    """From `state` (digits) to `state_codes` [and "classes"]: a digit names its cell's code and
    state value, so both are lookups by digit."""
    rule = t.rule
    digit = b.op("Cast", [b.op("Squeeze", [state, b.const([1])])], to=INT32)
    shape = b.op("Shape", [digit])
    v = _lookup_v(rule)
    value, cell_code = t.pairs % v, t.pairs // v
    state_code = np.where(value == 0, rule.zero_code, value - 1)
    b.op("Cast", [_lookup_flat(b, state_code.astype(np.int32), digit, shape)], state_codes, to=_code_type(rule))
    if readout:  # int32 tables: uint8 only at a graph's edge (TensorRT)
        classes = rule.readout_table()[cell_code, state_code].astype(np.int32)
        b.op("Cast", [_lookup_flat(b, classes, digit, shape)], "classes", to=UINT8)


def _lookup_cells(packed: bool) -> list:
    return ["cells"] if packed else ["length"]


def lookup_prepare(t: LookupTables, packed: bool, fresh: bool) -> onnx.ModelProto:
    """codes (B, L) uint8 [, state_codes] -> state (B, 1, L) float digits (packed: B = 1; rings
    and lines alike: a digit reads no neighbour)."""
    b = _Builder("sead_lookup_prepare")
    _lookup_prepare_nodes(b, t, fresh)
    cells = _lookup_cells(packed)
    inputs = [_io("codes", UINT8, ["batch", *cells])]
    if not fresh:
        inputs.append(_io("state_codes", _code_type(t.rule), ["batch", *cells]))
    return b.model(inputs, [_io("state", FLOAT, ["batch", 1, *cells])])


def lookup_advance(t: LookupTables, k: int, packed: bool, mode: str, wrap: int = 0) -> onnx.ModelProto:
    """K steps; modes, inputs and outputs as cf_advance, with the state and the tables it reads
    (LookupTables.inputs) in place of features, threshold and state. wrap: rings, whose rows are
    at least this many cells (0: lines); blocks run on rings where wrap >= block_steps."""
    if packed and (mode == "budget" or wrap):
        raise ValueError("only rows that end in an empty cell and need no budget are packed")
    b = _Builder(f"sead_lookup_advance_{mode}_{k}")
    _lookup_advance_nodes(b, t, k, packed, mode, wrap)
    cells = _lookup_cells(packed)
    return _advance_model(b, mode, packed, cells, [_io("state", FLOAT, ["batch", 1, *cells]),
                                                   *_tables_read(b, t.inputs)], 1)


def lookup_finish(t: LookupTables, packed: bool, readout: bool = True) -> onnx.ModelProto:
    """codes (B, L) uint8, state (B, 1, L) digits -> state_codes (B, L) [, classes (B, L) uint8].
    The digits hold the codes: "codes" is unread, taken so that every layout's finish has the same
    inputs."""
    b = _Builder("sead_lookup_finish")
    _lookup_finish_nodes(b, t, "state", "state_codes", readout)
    cells = _lookup_cells(packed)
    outputs = [_io("state_codes", _code_type(t.rule), ["batch", *cells])]
    if readout:
        outputs.append(_io("classes", UINT8, ["batch", *cells]))
    return b.model([_io("codes", UINT8, ["batch", *cells]), _io("state", FLOAT, ["batch", 1, *cells])], outputs)


def lookup_window(t: LookupTables, k: int, mode: str, fresh: bool) -> onnx.ModelProto:
    """Tile windows in one graph, as cf_window (same inputs and outputs, and the tables it reads),
    in the lookup form."""
    return _window(t.rule, k, mode, fresh, f"sead_lookup_window_{mode}_{k}",
                   lambda b, _, fresh, wrap: _lookup_prepare_nodes(b, t, fresh, wrap),
                   lambda b: _lookup_advance_nodes(b, t, k, True, mode, False),
                   lambda b, _, state, state_codes, readout: _lookup_finish_nodes(b, t, state, state_codes, readout),
                   extra_inputs=lambda b: _tables_read(b, t.inputs))


# -- classes: class-coded blocks, tile windows only (runtime/class_blocks.py) ----------------------
# The state (1, C + 1, cells), packed windows: per cell its digit's class in each of the C maps
# (channel 0 the digit) and, last, whether the latest step changed it. A block of j steps is an
# index convolution, a cast, an Expand to every channel and one GatherElements in its table.

def _classes_prepare_nodes(b: _Builder, t: LookupTables, c: ClassTables, fresh: bool) -> None:
    """From "codes" [and "state_codes"] (1, cells) to "state" (1, C + 1, cells): a digit, then
    its class in every map."""
    _lookup_prepare_nodes(b, t, fresh, out="digits")
    index = b.op("Expand", [b.op("Cast", ["digits"], to=INT32), b.const(np.array([1, c.width, 1], np.int64))])
    b.op("GatherElements", [b.const(c.digit_channels), index], "state", axis=2)


def _classes_advance_nodes(b: _Builder, c: ClassTables, k: int, expand: bool = True) -> None:
    """From "state" and the block tables to "state_out" and "hot" (1, cells) bool, the cells the
    K-th step changed. expand: the index is made once and expanded to every channel; else the
    convolution writes it to every channel, one operator fewer a block (on this CPU slower)."""
    state, every = "state", b.const(np.array([1, c.width, 1], np.int64))
    for steps in c.plan(k):
        weight = c.weights[steps] if expand else np.repeat(c.weights[steps], c.width, axis=0)
        index = b.op("Cast", [b.op("Conv", [state, b.const(weight)], pads=list(c.pads[steps]))], to=INT32)
        if expand:
            index = b.op("Expand", [index, every])
        state = b.op("GatherElements", [f"class_table_{steps}", index], axis=2)
    b.op("Identity", [state], "state_out")
    changed = b.op("Slice", [state, b.const([c.width - 1]), b.const([c.width]), b.const([1])])
    b.op("Squeeze", [b.op("Greater", [changed, b.const(np.float32(0.5))]), b.const([1])], "hot")


def _classes_digits(b: _Builder, state: str) -> str:
    return b.op("Slice", [state, b.const([0]), b.const([1]), b.const([1])])


def classes_prepare(t: LookupTables, c: ClassTables, fresh: bool) -> onnx.ModelProto:
    """codes (1, cells) uint8 [, state_codes] -> state (1, C + 1, cells) float."""
    b = _Builder("sead_classes_prepare")
    _classes_prepare_nodes(b, t, c, fresh)
    inputs = [_io("codes", UINT8, [1, "cells"])]
    if not fresh:
        inputs.append(_io("state_codes", _code_type(t.rule), [1, "cells"]))
    return b.model(inputs, [_io("state", FLOAT, [1, c.width, "cells"])])


def classes_advance(c: ClassTables, k: int, expand: bool = True) -> onnx.ModelProto:
    """K steps, mode hot: state (1, C + 1, cells) and the class tables it reads (ClassTables.inputs)
    -> state_out, hot (1, cells) bool. expand: as _classes_advance_nodes."""
    b = _Builder(f"sead_classes_advance_hot_{k}")
    _classes_advance_nodes(b, c, k, expand)
    state = _io("state", FLOAT, [1, c.width, "cells"])
    return b.model([state, *_tables_read(b, c.inputs)],
                   [_io("state_out", FLOAT, [1, c.width, "cells"]), _io("hot", BOOL, [1, "cells"])])


def classes_finish(t: LookupTables, c: ClassTables, readout: bool = True) -> onnx.ModelProto:
    """codes (1, cells), state (1, C + 1, cells) -> state_codes [, classes], as lookup_finish."""
    b = _Builder("sead_classes_finish")
    _lookup_finish_nodes(b, t, _classes_digits(b, "state"), "state_codes", readout)
    outputs = [_io("state_codes", _code_type(t.rule), [1, "cells"])]
    if readout:
        outputs.append(_io("classes", UINT8, [1, "cells"]))
    return b.model([_io("codes", UINT8, [1, "cells"]), _io("state", FLOAT, [1, c.width, "cells"])], outputs)


def classes_window(t: LookupTables, c: ClassTables, k: int, fresh: bool) -> onnx.ModelProto:
    """Tile windows in one graph, as cf_window in mode hot (same inputs and outputs, and the class
    tables it reads)."""
    return _window(t.rule, k, "hot", fresh, f"sead_classes_window_hot_{k}",
                   lambda b, _, fresh, wrap: _classes_prepare_nodes(b, t, c, fresh),
                   lambda b: _classes_advance_nodes(b, c, k),
                   lambda b, _, state, state_codes, readout: _lookup_finish_nodes(b, t, _classes_digits(b, state),
                                                                                 state_codes, readout),
                   extra_inputs=lambda b: _tables_read(b, c.inputs))


# -- cl: channels last, rows of cells with a neighbour table --------------------------------------

def _cl_problem_tables(rule: Rule) -> np.ndarray:
    """(taps * C_in, H): row (tap, code) is what a neighbour with that code adds to the first
    layer: its mask weight and its symbol's weight (code 0, an empty cell: nothing)."""
    w = rule.tap_weights("problem").astype(np.float64)  # (taps, H, C_in)
    table = np.zeros((rule.taps, rule.input_channels, rule.hidden), np.float64)
    table[:, 1:] = (w[:, :, :1] + w[:, :, 1:]).transpose(0, 2, 1)
    return table.reshape(-1, rule.hidden).astype(np.float32)


def _cl_state_tables(rule: Rule) -> np.ndarray:
    """Symbol states: (taps * (classes + 1), H): what a neighbour in class c adds to the first
    layer (row `classes`: the zero state, nothing). Each row is one weight: exact."""
    w = rule.tap_weights("state")  # (taps, H, classes)
    table = np.zeros((rule.taps, rule.state_channels + 1, rule.hidden), np.float32)
    table[:, : rule.state_channels] = w.transpose(0, 2, 1)
    return table.reshape(-1, rule.hidden)


def _cl_neighbours(b: _Builder, x: str) -> str:
    """x (B, L[, C]) -> (B, L, taps[, C]): each cell's neighbours, by the row's table (L, taps)."""
    return b.op("Gather", [x, "neighbours"], axis=1)


def _sign_from_codes(b: _Builder, rule: Rule, code: str) -> str:
    """code (..., 1) float -> (..., C_s) -1/+1 (bit c of the code), 0 for the zero state."""
    shifted = b.op("Floor", [b.op("Mul", [code, b.const(0.5 ** np.arange(rule.state_channels))])])  # z >> c, exact
    bits = b.op("Sub", [shifted, b.op("Mul", [b.op("Floor", [b.op("Mul", [shifted, b.const(np.float32(0.5))])]),
                                               b.const(np.float32(2))])])
    sign = b.op("Sub", [b.op("Mul", [bits, b.const(np.float32(2))]), b.const(np.float32(1))])
    return b.op("Where", [b.op("Equal", [code, b.const(np.float32(rule.zero_code))]), b.const(np.float32(0)), sign])


def cl_prepare(rule: Rule, fresh: bool) -> onnx.ModelProto:
    """codes (B, L) uint8, neighbours (L, taps) int64 [, state_codes (B, L)] -> features (B, L, H)
    (the problem's share of the first layer, bias included) and the working state: sign, mask and
    minus_mask (B, L, 1) and state (B, L, C_s) in -1/0/+1; symbol, is_real (B, L) bool and state
    (B, L) int64 classes (`classes` is the zero state)."""
    b = _Builder("sead_cl_prepare")
    codes = b.op("Cast", ["codes"], to=INT64)
    offsets = b.const((np.arange(rule.taps) * rule.input_channels).astype(np.int64))
    rows = b.op("Add", [_cl_neighbours(b, codes), offsets])  # (B, L, taps)
    parts = b.op("Gather", [b.const(_cl_problem_tables(rule)), rows])  # (B, L, taps, H)
    b.op("Add", [b.op("ReduceSum", [parts, b.const([2])], keepdims=0), b.const(rule.b_in)], "features")
    real = b.op("Greater", [codes, b.const(np.int64(0))])
    outputs = [_io("features", FLOAT, ["batch", "cells", rule.hidden])]
    if rule.state_code == "sign":
        b.op("Unsqueeze", [b.op("Cast", [real], to=FLOAT), b.const([2])], "mask")
        b.op("Neg", ["mask"], "minus_mask")
        if fresh:
            b.op("Mul", ["mask", b.const(np.zeros((1, 1, rule.state_channels), np.float32))], "state")
        else:
            code = b.op("Unsqueeze", [b.op("Cast", ["state_codes"], to=FLOAT), b.const([2])])  # (B, L, 1)
            b.op("Mul", [_sign_from_codes(b, rule, code), "mask"], "state")  # an empty cell holds no state
        outputs += [_io("mask", FLOAT, ["batch", "cells", 1]), _io("minus_mask", FLOAT, ["batch", "cells", 1]),
                    _io("state", FLOAT, ["batch", "cells", rule.state_channels])]
    else:
        b.op("Identity", [real], "is_real")
        if fresh:
            b.op("Add", [b.op("Mul", [codes, b.const(np.int64(0))]), b.const(np.int64(rule.zero_code))], "state")
        else:  # an empty cell holds the zero state
            b.op("Where", [real, b.op("Cast", ["state_codes"], to=INT64), b.const(np.int64(rule.zero_code))], "state")
        outputs += [_io("is_real", BOOL, ["batch", "cells"]), _io("state", INT64, ["batch", "cells"])]
    inputs = [_io("codes", UINT8, ["batch", "cells"]), _io("neighbours", INT64, ["cells", rule.taps])]
    if not fresh:
        inputs.append(_io("state_codes", _code_type(rule), ["batch", "cells"]))
    return b.model(inputs, outputs)


def _cl_step(b: _Builder, rule: Rule, state: str) -> str:
    w_out = b.const(rule.w_out.T.copy(), "w_out")
    if rule.state_code == "sign":
        x = b.op("Reshape", [_cl_neighbours(b, state), b.const([0, 0, -1], "flat_taps")])  # (B, L, taps * C_s)
        w = rule.tap_weights("state").transpose(0, 2, 1).reshape(-1, rule.hidden)  # (taps * C_s, H)
        hidden = b.op("Relu", [b.op("Add", [b.op("MatMul", [x, b.const(w, "w_state")]), "features"])])
        # W_out h + b_out > 0 as W_out h > -b_out: one kernel fewer a step, the same decision
        positive = b.op("Greater", [b.op("MatMul", [hidden, w_out]), b.const(-rule.b_out, "minus_b_out")])
        return b.op("Where", [positive, "mask", "minus_mask"])
    offsets = b.const((np.arange(rule.taps) * (rule.state_channels + 1)).astype(np.int64), "state_tap_offsets")
    rows = b.op("Add", [_cl_neighbours(b, state), offsets])  # (B, L, taps)
    parts = b.op("Gather", [b.const(_cl_state_tables(rule), "state_tables"), rows])  # (B, L, taps, H)
    hidden = b.op("Relu", [b.op("Add", [b.op("ReduceSum", [parts, b.const([2], "tap_axis")], keepdims=0), "features"])])
    pre = b.op("Add", [b.op("MatMul", [hidden, w_out]), b.const(rule.b_out, "b_out")])
    best = b.op("ArgMax", [pre], axis=2, keepdims=0)  # the first largest, as the exported step's ArgMax
    return b.op("Where", ["is_real", best, b.const(np.int64(rule.zero_code), "zero_state")])


def _cl_code(b: _Builder, rule: Rule, state: str) -> str:
    """One number per distinct cell state, (B, L): a sign state's sum of c 2^c s_c; a class."""
    if rule.state_code == "symbol":
        return state
    w = (2.0 ** np.arange(rule.state_channels)).reshape(-1, 1).astype(np.float32)
    return b.op("Squeeze", [b.op("MatMul", [state, b.const(w, "code_weights")]), b.const([2], "channel_axis")])


def cl_advance(rule: Rule, k: int, mode: str) -> onnx.ModelProto:
    """K steps on rows of cells (modes as cf_advance; budget (B,) float, owned (B, L) float). Inputs: neighbours
    (L, taps), features, and the working state from cl_prepare."""
    b = _Builder(f"sead_cl_advance_{mode}_{k}")
    symbol = rule.state_code == "symbol"
    state, previous, changed_at = _unroll(b, k, mode, lambda s: _cl_step(b, rule, s), lambda s: _cl_code(b, rule, s),
                                          [-1, 1] if symbol else [-1, 1, 1])
    state_io = _io("state_out", INT64, ["batch", "cells"]) if symbol else \
        _io("state_out", FLOAT, ["batch", "cells", rule.state_channels])
    inputs = [_io("neighbours", INT64, ["cells", rule.taps]), _io("features", FLOAT, ["batch", "cells", rule.hidden])]
    inputs += [_io("is_real", BOOL, ["batch", "cells"]), _io("state", INT64, ["batch", "cells"])] if symbol else \
        [_io("mask", FLOAT, ["batch", "cells", 1]), _io("minus_mask", FLOAT, ["batch", "cells", 1]),
         _io("state", FLOAT, ["batch", "cells", rule.state_channels])]
    if mode == "hot":
        if symbol:
            moved = b.op("Not", [b.op("Equal", [state, previous])])
        else:
            moved = b.op("Greater", [b.op("ReduceMax", [b.op("Abs", [b.op("Sub", [state, previous])]), b.const([2])],
                                          keepdims=0), b.const(np.float32(0))])
        b.op("Identity", [moved], "hot")
        return b.model(inputs, [state_io, _io("hot", BOOL, ["batch", "cells"])])
    if mode == "owned":
        changed_at = b.op("Mul", [changed_at, "owned"])
        inputs.append(_io("owned", FLOAT, ["batch", "cells"]))
    b.op("ReduceMax", [changed_at, b.const([1])], "last", keepdims=0)
    if mode == "budget":
        inputs.append(_io("budget", FLOAT, ["batch"]))
    return b.model(inputs, [state_io, _io("last", FLOAT, ["batch"])])


def cl_finish(rule: Rule, readout: bool = True) -> onnx.ModelProto:
    """codes (B, L) uint8, state -> state_codes (B, L), and classes (B, L) uint8 with readout
    (tile windows between calls need only their codes)."""
    b = _Builder("sead_cl_finish")
    codes = b.op("Cast", ["codes"], to=INT64)
    real = b.op("Greater", [codes, b.const(np.int64(0))])
    if rule.state_code == "symbol":
        b.op("Cast", ["state"], "state_codes", to=_code_type(rule))
        zero = b.op("Equal", ["state", b.const(np.int64(rule.zero_code))])
        if not readout:
            zero = None
        # the exported step reads a symbol state as its logits: the zero state reads as class 0
        if readout:
            b.op("Cast", [b.op("Where", [zero, b.const(np.int64(0)), "state"])], "classes", to=UINT8)
        state_io = _io("state", INT64, ["batch", "cells"])
    else:
        positive = b.op("Cast", [b.op("Greater", ["state", b.const(np.float32(0))])], to=FLOAT)
        w = (2.0 ** np.arange(rule.state_channels)).reshape(-1, 1).astype(np.float32)
        bits = b.op("Squeeze", [b.op("MatMul", [positive, b.const(w)]), b.const([2])])
        started = b.op("Greater", [b.op("ReduceMax", [b.op("Abs", ["state"]), b.const([2])], keepdims=0),
                                   b.const(np.float32(0))])  # the zero state is all zeros
        code = b.op("Where", [b.op("And", [real, started]), bits, b.const(np.float32(rule.zero_code))])
        b.op("Cast", [code], "state_codes", to=_code_type(rule))
        if readout:
            _readout_lookup(b, rule, codes, b.op("Cast", [code], to=INT64))
        state_io = _io("state", FLOAT, ["batch", "cells", rule.state_channels])
    outputs = [_io("state_codes", _code_type(rule), ["batch", "cells"])]
    if readout:
        outputs.append(_io("classes", UINT8, ["batch", "cells"]))
    return b.model([_io("codes", UINT8, ["batch", "cells"]), state_io], outputs)
