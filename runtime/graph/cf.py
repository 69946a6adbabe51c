"""cf: channels first, sign states. Rows (B, C, L) or grids (B, C, H, W); neighbours through a
convolution over the state channels; rows that each end in an empty cell packed end to end.

The working state is b = (s + mask) / 2 per channel: 1 or 0 on a real cell (s = +1 or -1), 0 on
an empty one, 0.5 on a real cell before its first step (s = 0). Then the rule's state part is
conv(s) = conv(2b) - conv(mask) (the second is fixed: prepare folds it into the features), and
the next state is one comparison and a cast. The comparison W_out h + b_out > 0 is made as
W_out h > -b_out (the same for finite floats: a rounded sum is never zero unless the exact one
is), against a per-cell threshold that is +1e30 on an empty cell, so it stays 0. ONNX Runtime's
CPU provider runs this much faster than a select between +mask and -mask.
"""
from __future__ import annotations

import numpy as np
import onnx

from ..rule import Rule
from .builder import (BOOL, FLOAT, INT64, MS_DOMAIN, UINT8, Builder, advance_model, code_type, readout_lookup,
                      tensor_io, unroll, window, wrap_ring)

FAR = np.float32(1e30)  # an empty cell's threshold: no finite rule output passes it
TRIPLE_TABLE_ELEMENTS = 1 << 22  # the problem share by each row's (left, own, right) codes, if its tables are this small


def _cf_cells(rule: Rule, packed: bool) -> list:
    if packed:
        return ["cells"]
    return ["length"] if rule.rank == 1 else ["height", "width"]


def _cf_pads(rule: Rule, wrap: bool) -> list[int]:
    return [0] * 2 * rule.rank if wrap else [1] * 2 * rule.rank


def _cf_conv(b: Builder, rule: Rule, wrap: bool, x: str, w: np.ndarray, bias: str | None = None) -> str:
    """The rule's width-3 (3x3) convolution over x, zeros (or, wrapped, the ring) beyond each row's ends."""
    x = wrap_ring(b, x) if wrap else x
    return b.op("Conv", [x, b.const(w)] + ([bias] if bias else []), pads=_cf_pads(rule, wrap))


def _cf_problem(b: Builder, rule: Rule, codes: str) -> str:
    """codes (B, *S) uint8 -> the exported step's problem tensor (B, C_in, *S) float32: the mask,
    then the one-hot symbol (code 1 + s)."""
    c = b.op("Unsqueeze", [b.op("Cast", [codes], to=INT64), b.const([1])])  # (B, 1, *S)
    index = np.arange(rule.input_channels, dtype=np.int64).reshape(1, -1, *[1] * rule.rank)
    index[0, 0] = -1  # channel 0 is the mask, filled below
    onehot = b.op("Cast", [b.op("Equal", [c, b.const(index)])], to=FLOAT)
    mask = b.op("Cast", [b.op("Greater", [c, b.const(np.int64(0))])], to=FLOAT)
    rest = b.op("Slice", [onehot, b.const([1]), b.const([rule.input_channels]), b.const([1])])
    return b.op("Concat", [mask, rest], axis=1)


def _code_triples(b: Builder, rule: Rule, codes: str, wrap: bool) -> str:
    """codes (B, L) int64 -> (B, L) int64: (left C_in + own) C_in + right, empty beyond the ends
    (or, wrapped, around the ring)."""
    padded = wrap_ring(b, codes, axis=1) if wrap else b.op("Pad", [codes, b.const(np.array([0, 1, 0, 1], np.int64))])
    return _triples(b, rule, padded)


def _triples(b: Builder, rule: Rule, padded: str) -> str:
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
    b = Builder("sead_cf_prepare")
    _cf_prepare_nodes(b, rule, fresh, wrap)
    inputs = [tensor_io("codes", UINT8, ["batch", *_cf_cells(rule, packed)])]
    if not fresh:
        inputs.append(tensor_io("state_codes", code_type(rule), ["batch", *_cf_cells(rule, packed)]))
    cells = _cf_cells(rule, packed)
    outputs = [tensor_io("features", FLOAT, ["batch", rule.hidden, *cells]),
               tensor_io("threshold", FLOAT, ["batch", rule.state_channels, *cells]),
               tensor_io("state", FLOAT, ["batch", rule.state_channels, *cells])]
    return b.model(inputs, outputs)


def _cf_prepare_nodes(b: Builder, rule: Rule, fresh: bool, wrap: bool) -> None:
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
# value does, and lookups along axis 1 (one value per channel) ran slower.

def _cf_state_table(rule: Rule) -> np.ndarray:
    """(2^C_s + 1, C_s) float32: the working value of each channel of a real cell with state code
    z (its bit c), 0.5 in every channel at zero_code (before the first step)."""
    table = np.full((rule.zero_code + 1, rule.state_channels), 0.5, np.float32)
    table[: rule.zero_code] = rule.code_bits
    return table


def _problem_share(b: Builder, rule: Rule, codes: str, wrap: bool) -> str:
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


def _cf_step(b: Builder, rule: Rule, state: str, wrap: bool, fused: bool) -> str:
    if "w_state2" not in b.inits:
        b.const(2 * rule.w_in[:, rule.input_channels:], "w_state2")
        b.const(rule.w_out.reshape(*rule.w_out.shape, *[1] * rule.rank), "w_out")
    x = wrap_ring(b, state) if wrap else state
    if fused:  # relu(conv + 0 + features) as one node instead of three (its own summation order)
        if "zero_bias" not in b.inits:
            b.const(np.zeros(rule.hidden, np.float32), "zero_bias")
        hidden = b.op("FusedConv", [x, "w_state2", "zero_bias", "features"], domain=MS_DOMAIN, activation="Relu",
                      pads=_cf_pads(rule, wrap))
    else:
        hidden = b.op("Relu", [b.op("Add", [b.op("Conv", [x, "w_state2"], pads=_cf_pads(rule, wrap)), "features"])])
    return b.op("Cast", [b.op("Greater", [b.op("Conv", [hidden, "w_out"]), "threshold"])], to=FLOAT)


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
    b = Builder(f"sead_cf_advance_{mode}_{k}")
    _cf_advance_nodes(b, rule, k, packed, mode, wrap, fused)
    cells = _cf_cells(rule, packed)
    inputs = [tensor_io("features", FLOAT, ["batch", rule.hidden, *cells]),
              tensor_io("threshold", FLOAT, ["batch", rule.state_channels, *cells]),
              tensor_io("state", FLOAT, ["batch", rule.state_channels, *cells])]
    return advance_model(b, mode, packed, cells, inputs, rule.state_channels)


def _rows_moved(b: Builder, rule: Rule, mode: str, packed: bool):
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


def _cf_advance_nodes(b: Builder, rule: Rule, k: int, packed: bool, mode: str, wrap: bool, fused: bool) -> None:
    """cf_advance's nodes: from "features", "threshold", "state" (and by mode "owned", "rows",
    "budget") to "state_out" and "hot" or "last"."""
    state, previous, last = unroll(b, k, mode, lambda s: _cf_step(b, rule, s, wrap, fused), None,
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
    b = Builder("sead_cf_finish")
    _cf_finish_nodes(b, rule, "state", "state_codes", readout)
    cells_axes = _cf_cells(rule, packed)
    outputs = [tensor_io("state_codes", code_type(rule), ["batch", *cells_axes])]
    if readout:
        outputs.append(tensor_io("classes", UINT8, ["batch", *cells_axes]))
    return b.model([tensor_io("codes", UINT8, ["batch", *cells_axes]),
                    tensor_io("state", FLOAT, ["batch", rule.state_channels, *cells_axes])], outputs)


def _cf_finish_nodes(b: Builder, rule: Rule, state: str, state_codes: str, readout: bool) -> None:
    """cf_finish's nodes: from "codes" and `state` to `state_codes` [and "classes"]."""
    codes = b.op("Cast", ["codes"], to=INT64)
    real = b.op("Greater", [codes, b.const(np.int64(0))])
    first = b.op("Squeeze", [b.op("Slice", [state, b.const([0]), b.const([1]), b.const([1])]), b.const([1])])
    fresh = b.op("Equal", [first, b.const(np.float32(0.5))])  # before the first step (all channels alike)
    bits = b.op("Squeeze", [b.op("Conv", [state, b.const(_cf_channels(rule, 2.0 ** np.arange(rule.state_channels)))]),
                            b.const([1])])
    code = b.op("Where", [b.op("And", [real, b.op("Not", [fresh])]), bits, b.const(np.float32(rule.zero_code))])
    b.op("Cast", [code], state_codes, to=code_type(rule))
    if readout:
        readout_lookup(b, rule, codes, b.op("Cast", [code], to=INT64))


def cf_window(rule: Rule, k: int, mode: str, fresh: bool, fused: bool = False) -> onnx.ModelProto:
    """Tile windows of a tape in one graph, prepare, K steps and finish, for hosts where each run
    has a cost of its own (the CPU provider): window_codes (B, L) uint8 [, window_state_codes
    (B, L)] [, window_owned (B, L) float] -> window_state_codes_out (B, L) and, by mode (hot or
    owned, as cf_advance), window_hot (B, L) bool or last (B,) float. Rows are packed inside."""
    return window(rule, k, mode, fresh, f"sead_cf_window_{mode}_{k}", _cf_prepare_nodes,
                   lambda b: _cf_advance_nodes(b, rule, k, packed=True, mode=mode, wrap=False, fused=fused),
                   _cf_finish_nodes)
