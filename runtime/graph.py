"""Graphs the runtime derives from the exported single step (onnx graph surgery, no torch).

- advance graph: K copies of the step's state path, chained, with a per-row step budget, the
  last step at which each cell changed, and the last step at which each row's owned cells
  changed (see advance_graph). Every engine runs it; the CPU engine also in a packed layout.

- settle graph: the packed advance without budgets or per-cell bookkeeping, for whole problems
  of a fixed-point task (the CPU engine's batches of short problems; see settle_graph).

- readout graph: the step's logits path alone: (problem, state) -> logits (B, classes, L); and
  the symbols graph, the same with its argmax.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .model_file import StepModel, cell_axes


def _needed_nodes(graph: onnx.GraphProto, outputs: list[str]) -> list[onnx.NodeProto]:
    """The nodes an output depends on, in the original (topological) order."""
    wanted, keep = set(outputs), []
    for node in reversed(graph.node):
        if wanted & set(node.output):
            keep.append(node)
            wanted |= set(node.input)
    return list(reversed(keep))


def _io(name: str, dims: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def _finish(graph: onnx.GraphProto, step: StepModel, name: str) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=list(step.proto.opset_import), producer_name="sead.runtime")
    model.ir_version = step.proto.ir_version
    onnx.checker.check_model(model)
    return model


def readout_graph(step: StepModel) -> onnx.ModelProto:
    g = step.proto.graph
    nodes = _needed_nodes(g, ["logits"])
    used = {i for n in nodes for i in n.input}
    inits = [t for t in g.initializer if t.name in used]
    graph = helper.make_graph(nodes, "sead_readout", [i for i in g.input], [o for o in g.output if o.name == "logits"], inits)
    return _finish(graph, step, "readout")


def symbols_graph(step: StepModel) -> onnx.ModelProto:
    """The readout with its argmax: (problem, state) -> symbols (B, L) int64, so the host gets
    one class per cell instead of `classes` floats and does no argmax (CPU engines)."""
    model = readout_graph(step)
    g = model.graph
    g.node.append(helper.make_node("ArgMax", ["logits"], ["symbols"], axis=1, keepdims=0))
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("symbols", TensorProto.INT64, ["batch", *cell_axes(step.metadata.rank)]))
    return _finish(g, step, "symbols")


def _step_copy(body: list[onnx.NodeProto], const_names: set[str], i: int, state: str) -> list[onnx.NodeProto]:
    """Copy i of the step's state path, reading `state`; writes s{i}_next_state."""
    rename = lambda t: t if t in const_names or t == "problem" else (state if t == "state" else f"s{i}_{t}")
    out = []
    for j, node in enumerate(body):
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = f"s{i}_{node.name or j}"
        copy.input[:] = [rename(t) for t in node.input]
        copy.output[:] = [rename(t) for t in node.output]
        out.append(copy)
    return out


def _state_path(step: StepModel, wrap: bool):
    """The step's state path, split for iteration: -> (prologue, body, initializers, shared names).
    wrap: the row is a whole ring (its ends are neighbours); otherwise zeros lie beyond each end.

    The rule's first convolution reads [problem; state]. A convolution is linear in its input
    channels, so it is the problem's part (computed once per call, in the prologue) plus the
    state's part (every step): the problem never changes during a solve, and its channels are
    most of the convolution's work. The rest of the path is copied as exported.
    """
    meta = step.metadata
    if wrap and meta.boundary != "ring":
        raise ValueError("only a ring task's rows wrap")
    pads = [1] * 2 * meta.rank
    g = step.proto.graph
    body = _needed_nodes(g, ["next_state"])
    conv = next(n for n in body if n.op_type == "Conv")
    chain = {id(n) for n in _needed_nodes(g, [conv.input[0]])}  # the concat (and ring wrap) feeding it
    body = [n for n in body if id(n) not in chain and n is not conv]
    weights = {t.name: t for t in g.initializer}
    w = numpy_helper.to_array(weights[conv.input[1]])
    used = {i for n in body for i in n.input}
    inits = [t for t in g.initializer if t.name in used]
    inits += [numpy_helper.from_array(w[:, : meta.input_channels].copy(), "adv_w_problem"),
              numpy_helper.from_array(w[:, meta.input_channels:].copy(), "adv_w_state"),
              weights[conv.input[2]]]
    prologue, per_step = [], []
    if wrap:
        inits += [numpy_helper.from_array(np.array([v], np.int64), n) for n, v in
                  (("adv_wrap_last", -1), ("adv_wrap_end", np.iinfo(np.int64).max), ("adv_wrap_first", 0),
                   ("adv_wrap_one", 1), ("adv_wrap_axis", 2))]
        wrapped = lambda src, dst: [
            helper.make_node("Slice", [src, "adv_wrap_last", "adv_wrap_end", "adv_wrap_axis"], [dst + "_left"]),
            helper.make_node("Slice", [src, "adv_wrap_first", "adv_wrap_one", "adv_wrap_axis"], [dst + "_right"]),
            helper.make_node("Concat", [dst + "_left", src, dst + "_right"], [dst], axis=2)]
        prologue += wrapped("problem", "adv_problem_wrapped")
        prologue.append(helper.make_node("Conv", ["adv_problem_wrapped", "adv_w_problem", conv.input[2]], ["adv_features"]))
        per_step += wrapped("state", "state_wrapped")
        per_step.append(helper.make_node("Conv", ["state_wrapped", "adv_w_state"], ["state_conv"]))
    else:
        prologue.append(helper.make_node("Conv", ["problem", "adv_w_problem", conv.input[2]], ["adv_features"], pads=pads))
        per_step.append(helper.make_node("Conv", ["state", "adv_w_state"], ["state_conv"], pads=pads))
    per_step.append(helper.make_node("Add", ["adv_features", "state_conv"], [conv.output[0]]))
    shared = {t.name for t in inits} | {"adv_features"}
    return prologue, per_step + body, inits, shared


def advance_graph(step: StepModel, k: int, wrap: bool = False, packed: bool = False) -> onnx.ModelProto:
    """K steps of the rule over batch rows, each row gated by its own step budget.

        inputs   problem (B, C_in, *S), state (B, C_s, *S), budget (B, 1, 1, ...), owned (B, 1, *S) float32
        outputs  state_out (B, C_s, *S)
                 changed_at (B, 1, *S): the last step (1..K) at which each cell changed; 0 if none
                 last (B, 1, 1, ...): the last step at which a cell the row owns changed; 0 if none

    S is (L,) on a tape and (H, W) on a grid (rank 2; budget and last are then (B, 1, 1, 1)).

    Row b runs min(K, budget[b]) steps; after them its state is held. A row is a whole tape (a
    short problem; `owned` is its mask) or a tile window: owned cells with a halo of at least K
    cells on each cut side, so that the cut edges corrupt only the halo (radius 1: one cell per
    step). A tape's changes happen at steps 1..c and none after (a discrete map that reaches a
    fixed point stays there), so the largest `last` over a tape's rows is its count of changing
    steps; and a cell with changed_at == budget changed at the final step, so its neighbours may
    change in the next call.

    wrap: rows are whole rings (a ring's ends are neighbours); tile windows are never wrapped.
    packed: the B rows of length L lie end to end in one row, (1, C, B*L), with the budget per
    cell, plus rows_shape int64 [1, B, L]; `last` is then (1, B, 1) and changed_at (1, 1, B*L).
    A CPU convolution over one long row is one large matrix product instead of B small ones.
    Exact when every row ends in an empty cell: beyond each row lies what lies beyond a tape.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    if wrap and packed:
        raise ValueError("whole rings cannot be packed end to end")
    meta = step.metadata
    if packed and meta.rank != 1:
        raise ValueError("only tapes (rank 1) are packed end to end")
    spatial = list(range(2, 2 + meta.rank))  # the cell axes of (B, C, *S)
    prologue, body, inits, const_names = _state_path(step, wrap)
    consts = {"adv_zero": np.float32(0)}
    nodes: list[onnx.NodeProto] = list(prologue)
    state, changed_at = "state", "adv_zero"
    for i in range(k):
        nodes += _step_copy(body, const_names, i, state)
        consts[f"adv_k{i}"], consts[f"adv_k{i + 1}"] = np.float32(i), np.float32(i + 1)
        held = "state_out" if i == k - 1 else f"s{i}_held"
        nodes += [helper.make_node("Greater", ["budget", f"adv_k{i}"], [f"s{i}_active"]),
                  helper.make_node("Where", [f"s{i}_active", f"s{i}_next_state", state], [held]),
                  helper.make_node("Sub", [held, state], [f"s{i}_diff"])]
        nodes += _reduce(f"s{i}_diff", f"s{i}_moved_by", [1], step.opset, consts, "ReduceL1")  # (B, 1, L)
        marked = "changed_at" if i == k - 1 else f"s{i}_changed_at"
        nodes += [helper.make_node("Greater", [f"s{i}_moved_by", "adv_zero"], [f"s{i}_moved"]),
                  helper.make_node("Where", [f"s{i}_moved", f"adv_k{i + 1}", changed_at], [marked])]
        state, changed_at = held, marked
    nodes.append(helper.make_node("Mul", ["changed_at", "owned"], ["owned_changed_at"]))
    if packed:
        nodes.append(helper.make_node("Reshape", ["owned_changed_at", "rows_shape"], ["rows_changed_at"]))  # (1, B, L)
        nodes += _reduce("rows_changed_at", "last", [2], step.opset, consts)
    else:
        nodes += _reduce("owned_changed_at", "last", spatial, step.opset, consts)
    inits += [numpy_helper.from_array(np.asarray(v), name=n) for n, v in consts.items()]
    c_in, c_s = meta.input_channels, meta.state_channels
    if packed:
        inputs = [_io("problem", [1, c_in, "cells"]), _io("state", [1, c_s, "cells"]), _io("budget", [1, 1, "cells"]),
                  _io("owned", [1, 1, "cells"]), helper.make_tensor_value_info("rows_shape", TensorProto.INT64, [3])]
        outputs = [_io("state_out", [1, c_s, "cells"]), _io("changed_at", [1, 1, "cells"]), _io("last", [1, "batch", 1])]
    else:
        cells, ones = cell_axes(meta.rank), [1] * meta.rank
        inputs = [_io("problem", ["batch", c_in, *cells]), _io("state", ["batch", c_s, *cells]),
                  _io("budget", ["batch", 1, *ones]), _io("owned", ["batch", 1, *cells])]
        outputs = [_io("state_out", ["batch", c_s, *cells]), _io("changed_at", ["batch", 1, *cells]),
                   _io("last", ["batch", 1, *ones])]
    name = f"sead_{'packed' if packed else 'ring' if wrap else 'rows'}_advance_{k}"
    return _finish(helper.make_graph(nodes, name, inputs, outputs, inits), step, name)


def settle_graph(step: StepModel, k: int) -> onnx.ModelProto:
    """K steps over whole problems of a fixed-point task, packed end to end, with no budget.

        inputs   problem (1, C_in, B*L), state (1, C_s, B*L) float32, rows_shape int64 [C_s, B, L]
        outputs  state_out (1, C_s, B*L), last (1, B, 1): how many of the K steps changed each row

    The advance graph's packed layout without its per-step bookkeeping (the budget gate, the
    per-cell changed_at, the owned mask), which short problems do not need (README, "The loop").
    Nothing is lost for whole problems of a fixed-point task: a row's changes
    are steps 1..c and none after (a fixed point holds), so the count of changing steps is the
    last one, and the engine clips it to the row's budget; a row that runs past its budget
    without settling has run out of steps, and its state is never read.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    meta = step.metadata
    if meta.rank != 1 or meta.boundary == "ring" or meta.convergence != "fixed_point":
        raise ValueError("the settle graph is for line tasks that run to a fixed point")
    prologue, body, inits, const_names = _state_path(step, wrap=False)
    consts = {"adv_zero": np.float32(0)}
    nodes: list[onnx.NodeProto] = list(prologue)
    state, count = "state", None
    for i in range(k):
        nodes += _step_copy(body, const_names, i, state)
        nodes += [helper.make_node("Sub", [f"s{i}_next_state", state], [f"s{i}_diff"]),
                  helper.make_node("Reshape", [f"s{i}_diff", "rows_shape"], [f"s{i}_diff_rows"])]  # (C_s, B, L)
        nodes += _reduce(f"s{i}_diff_rows", f"s{i}_moved_by", [0, 2], step.opset, consts, "ReduceL1")  # (1, B, 1)
        moved = f"s{i}_moved"
        nodes += [helper.make_node("Greater", [f"s{i}_moved_by", "adv_zero"], [moved + "_bool"]),
                  helper.make_node("Cast", [moved + "_bool"], [moved], to=TensorProto.FLOAT)]
        total = "last" if i == k - 1 else f"s{i}_count"
        nodes.append(helper.make_node("Add", [count, moved], [total]) if count else
                     helper.make_node("Identity", [moved], [total]))
        state, count = f"s{i}_next_state", total
    nodes.append(helper.make_node("Identity", [state], ["state_out"]))
    inits += [numpy_helper.from_array(np.asarray(v), name=n) for n, v in consts.items()]
    c_in, c_s = meta.input_channels, meta.state_channels
    inputs = [_io("problem", [1, c_in, "cells"]), _io("state", [1, c_s, "cells"]),
              helper.make_tensor_value_info("rows_shape", TensorProto.INT64, [3])]
    outputs = [_io("state_out", [1, c_s, "cells"]), _io("last", [1, "batch", 1])]
    name = f"sead_settle_{k}"
    return _finish(helper.make_graph(nodes, name, inputs, outputs, inits), step, name)


def _reduce(src: str, dst: str, axes: list[int], opset: int, consts: dict, op: str = "ReduceMax") -> list[onnx.NodeProto]:
    """A keepdims reduction over `axes` (opset 18 moved axes from an attribute to an input)."""
    if opset < 18:
        return [helper.make_node(op, [src], [dst], axes=axes, keepdims=1)]
    name = "adv_axes_" + "_".join(map(str, axes))
    consts[name] = np.array(axes, np.int64)
    return [helper.make_node(op, [src, name], [dst], keepdims=1)]
