"""cl: channels last, rows of cells with a neighbour table (runtime/layout.py): any topology is the
same graph."""
from __future__ import annotations

import numpy as np
import onnx

from ..rule import Rule
from .builder import BOOL, FLOAT, INT64, UINT8, Builder, code_type, readout_lookup, tensor_io, unroll


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


def _cl_neighbours(b: Builder, x: str) -> str:
    """x (B, L[, C]) -> (B, L, taps[, C]): each cell's neighbours, by the row's table (L, taps)."""
    return b.op("Gather", [x, "neighbours"], axis=1)


def _sign_from_codes(b: Builder, rule: Rule, code: str) -> str:
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
    b = Builder("sead_cl_prepare")
    codes = b.op("Cast", ["codes"], to=INT64)
    offsets = b.const((np.arange(rule.taps) * rule.input_channels).astype(np.int64))
    rows = b.op("Add", [_cl_neighbours(b, codes), offsets])  # (B, L, taps)
    parts = b.op("Gather", [b.const(_cl_problem_tables(rule)), rows])  # (B, L, taps, H)
    b.op("Add", [b.op("ReduceSum", [parts, b.const([2])], keepdims=0), b.const(rule.b_in)], "features")
    real = b.op("Greater", [codes, b.const(np.int64(0))])
    outputs = [tensor_io("features", FLOAT, ["batch", "cells", rule.hidden])]
    if rule.state_code == "sign":
        b.op("Unsqueeze", [b.op("Cast", [real], to=FLOAT), b.const([2])], "mask")
        b.op("Neg", ["mask"], "minus_mask")
        if fresh:
            b.op("Mul", ["mask", b.const(np.zeros((1, 1, rule.state_channels), np.float32))], "state")
        else:
            code = b.op("Unsqueeze", [b.op("Cast", ["state_codes"], to=FLOAT), b.const([2])])  # (B, L, 1)
            b.op("Mul", [_sign_from_codes(b, rule, code), "mask"], "state")  # an empty cell holds no state
        outputs += [tensor_io("mask", FLOAT, ["batch", "cells", 1]), tensor_io("minus_mask", FLOAT, ["batch", "cells", 1]),
                    tensor_io("state", FLOAT, ["batch", "cells", rule.state_channels])]
    else:
        b.op("Identity", [real], "is_real")
        if fresh:
            b.op("Add", [b.op("Mul", [codes, b.const(np.int64(0))]), b.const(np.int64(rule.zero_code))], "state")
        else:  # an empty cell holds the zero state
            b.op("Where", [real, b.op("Cast", ["state_codes"], to=INT64), b.const(np.int64(rule.zero_code))], "state")
        outputs += [tensor_io("is_real", BOOL, ["batch", "cells"]), tensor_io("state", INT64, ["batch", "cells"])]
    inputs = [tensor_io("codes", UINT8, ["batch", "cells"]), tensor_io("neighbours", INT64, ["cells", rule.taps])]
    if not fresh:
        inputs.append(tensor_io("state_codes", code_type(rule), ["batch", "cells"]))
    return b.model(inputs, outputs)


def _cl_step(b: Builder, rule: Rule, state: str) -> str:
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


def _cl_code(b: Builder, rule: Rule, state: str) -> str:
    """One number per distinct cell state, (B, L): a sign state's sum of c 2^c s_c; a class."""
    if rule.state_code == "symbol":
        return state
    w = (2.0 ** np.arange(rule.state_channels)).reshape(-1, 1).astype(np.float32)
    return b.op("Squeeze", [b.op("MatMul", [state, b.const(w, "code_weights")]), b.const([2], "channel_axis")])


def cl_advance(rule: Rule, k: int, mode: str) -> onnx.ModelProto:
    """K steps on rows of cells (modes as cf_advance; budget (B,) float, owned (B, L) float). Inputs: neighbours
    (L, taps), features, and the working state from cl_prepare."""
    b = Builder(f"sead_cl_advance_{mode}_{k}")
    symbol = rule.state_code == "symbol"
    state, previous, changed_at = unroll(b, k, mode, lambda s: _cl_step(b, rule, s), lambda s: _cl_code(b, rule, s),
                                          [-1, 1] if symbol else [-1, 1, 1])
    state_io = tensor_io("state_out", INT64, ["batch", "cells"]) if symbol else \
        tensor_io("state_out", FLOAT, ["batch", "cells", rule.state_channels])
    inputs = [tensor_io("neighbours", INT64, ["cells", rule.taps]), tensor_io("features", FLOAT, ["batch", "cells", rule.hidden])]
    inputs += [tensor_io("is_real", BOOL, ["batch", "cells"]), tensor_io("state", INT64, ["batch", "cells"])] if symbol else \
        [tensor_io("mask", FLOAT, ["batch", "cells", 1]), tensor_io("minus_mask", FLOAT, ["batch", "cells", 1]),
         tensor_io("state", FLOAT, ["batch", "cells", rule.state_channels])]
    if mode == "hot":
        if symbol:
            moved = b.op("Not", [b.op("Equal", [state, previous])])
        else:
            moved = b.op("Greater", [b.op("ReduceMax", [b.op("Abs", [b.op("Sub", [state, previous])]), b.const([2])],
                                          keepdims=0), b.const(np.float32(0))])
        b.op("Identity", [moved], "hot")
        return b.model(inputs, [state_io, tensor_io("hot", BOOL, ["batch", "cells"])])
    if mode == "owned":
        changed_at = b.op("Mul", [changed_at, "owned"])
        inputs.append(tensor_io("owned", FLOAT, ["batch", "cells"]))
    b.op("ReduceMax", [changed_at, b.const([1])], "last", keepdims=0)
    if mode == "budget":
        inputs.append(tensor_io("budget", FLOAT, ["batch"]))
    return b.model(inputs, [state_io, tensor_io("last", FLOAT, ["batch"])])


def cl_finish(rule: Rule, readout: bool = True) -> onnx.ModelProto:
    """codes (B, L) uint8, state -> state_codes (B, L), and classes (B, L) uint8 with readout
    (tile windows between calls need only their codes)."""
    b = Builder("sead_cl_finish")
    codes = b.op("Cast", ["codes"], to=INT64)
    real = b.op("Greater", [codes, b.const(np.int64(0))])
    if rule.state_code == "symbol":
        b.op("Cast", ["state"], "state_codes", to=code_type(rule))
        zero = b.op("Equal", ["state", b.const(np.int64(rule.zero_code))])
        if not readout:
            zero = None
        # the exported step reads a symbol state as its logits: the zero state reads as class 0
        if readout:
            b.op("Cast", [b.op("Where", [zero, b.const(np.int64(0)), "state"])], "classes", to=UINT8)
        state_io = tensor_io("state", INT64, ["batch", "cells"])
    else:
        positive = b.op("Cast", [b.op("Greater", ["state", b.const(np.float32(0))])], to=FLOAT)
        w = (2.0 ** np.arange(rule.state_channels)).reshape(-1, 1).astype(np.float32)
        bits = b.op("Squeeze", [b.op("MatMul", [positive, b.const(w)]), b.const([2])])
        started = b.op("Greater", [b.op("ReduceMax", [b.op("Abs", ["state"]), b.const([2])], keepdims=0),
                                   b.const(np.float32(0))])  # the zero state is all zeros
        code = b.op("Where", [b.op("And", [real, started]), bits, b.const(np.float32(rule.zero_code))])
        b.op("Cast", [code], "state_codes", to=code_type(rule))
        if readout:
            readout_lookup(b, rule, codes, b.op("Cast", [code], to=INT64))
        state_io = tensor_io("state", FLOAT, ["batch", "cells", rule.state_channels])
    outputs = [tensor_io("state_codes", code_type(rule), ["batch", "cells"])]
    if readout:
        outputs.append(tensor_io("classes", UINT8, ["batch", "cells"]))
    return b.model([tensor_io("codes", UINT8, ["batch", "cells"]), state_io], outputs)
