"""What every graph form is built with: a node-and-constant builder, tensor declarations, and the
pieces the forms share (K steps unrolled, the advance graph's inputs and outputs, tile windows as
one graph, the readout and flat lookups, a ring's wrapped rows). numpy + onnx only."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..rule import Rule

OPSET = 18
FLOAT, INT32, INT64, UINT8, BOOL = (TensorProto.FLOAT, TensorProto.INT32, TensorProto.INT64, TensorProto.UINT8,
                                    TensorProto.BOOL)
CODE_TYPES = {np.uint8: TensorProto.UINT8, np.uint16: TensorProto.UINT16, np.uint32: TensorProto.UINT32}
MS_DOMAIN = "com.microsoft"  # ONNX Runtime's own operators (FusedConv), used only where asked for


class Builder:
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


def tensor_io(name: str, elem: int, dims: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, dims)


def code_type(rule: Rule) -> int:
    return CODE_TYPES[rule.code_dtype]


def wrap_ring(b: Builder, x: str, axis: int = 2, left: int = 1, right: int = 1) -> str:
    """A ring's rows with their last `left` cells before the first and their first `right` after
    the last (along `axis`: a state's cells, or 1 for codes (B, L)); rows of at least that many."""
    parts = [x]
    if left:
        parts.insert(0, b.op("Slice", [x, b.const([-left]), b.const([np.iinfo(np.int64).max]), b.const([axis])]))
    if right:
        parts.append(b.op("Slice", [x, b.const([0]), b.const([right]), b.const([axis])]))
    return b.op("Concat", parts, axis=axis)


def unroll(b: Builder, k: int, mode: str, step, code_of, budget_shape: list[int], rows_moved=None):
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


def advance_model(b: Builder, mode: str, packed: bool, cells: list, inputs: list, channels: int) -> onnx.ModelProto:
    """A channels-first advance graph's inputs by mode, and its outputs (cf and lookup alike)."""
    state_io = tensor_io("state_out", FLOAT, ["batch", channels, *cells])
    if mode == "hot":
        return b.model(inputs, [state_io, tensor_io("hot", BOOL, ["batch", *cells])])
    if mode == "owned":
        inputs.append(tensor_io("owned", FLOAT, ["batch", 1, *cells]))
    if packed:
        inputs.append(tensor_io("rows", INT64, [2]))
    if mode == "budget":
        inputs.append(tensor_io("budget", FLOAT, ["rows"]))
    return b.model(inputs, [state_io, tensor_io("last", FLOAT, ["rows"])])


def window(rule: Rule, k: int, mode: str, fresh: bool, name: str, prepare, advance, finish,
            extra_inputs=lambda b: []) -> onnx.ModelProto:
    assert rule.rank == 1 and mode in ("hot", "owned")
    b = Builder(name)
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
    inputs = [tensor_io("window_codes", UINT8, ["rows", "cells"])]
    if not fresh:
        inputs.append(tensor_io("window_state_codes", code_type(rule), ["rows", "cells"]))
    outputs = [tensor_io("window_state_codes_out", code_type(rule), ["rows", "cells"])]
    if mode == "hot":
        b.op("Reshape", ["hot", "rows"], "window_hot")
        outputs.append(tensor_io("window_hot", BOOL, ["rows", "cells"]))
    else:
        inputs.append(tensor_io("window_owned", FLOAT, ["rows", "cells"]))
        outputs.append(tensor_io("last", FLOAT, ["rows"]))
    return b.model(inputs + extra_inputs(b), outputs)


def readout_lookup(b: Builder, rule: Rule, codes: str, state_codes: str) -> None:
    """classes (uint8) of sign-state cells from their codes and state codes (int64, same shape):
    one lookup in Rule.readout_table."""
    width = np.int64((1 << rule.state_channels) + 1)
    index = b.op("Add", [b.op("Mul", [codes, b.const(width)]), state_codes])
    table = rule.readout_table().reshape(-1).astype(np.int32)  # uint8 only at a graph's edge (TensorRT)
    b.op("Cast", [lookup_flat(b, table, index, b.op("Shape", [index]))], "classes", to=UINT8)


def lookup_flat(b: Builder, table: np.ndarray, index: str, shape: str) -> str:
    """table[index], table 1-D, for an integer index of any shape (`shape`, its Shape): one
    GatherElements over the flattened index, which ONNX Runtime's CPU provider runs faster a value
    than Gather. Outside advance graphs only (Shape)."""
    flat = b.op("Reshape", [index, b.const(np.array([-1], np.int64))])
    return b.op("Reshape", [b.op("GatherElements", [b.const(table), flat], axis=0), shape])
