"""Graphs the runtime derives from the exported single step (onnx graph surgery, no torch).

- advance graph: K copies of the step's state path, chained, with a per-problem step budget and
  a per-problem count of the steps that changed the state:

      inputs   problem (B, C_in, L), state (B, C_s, L), budget (B, 1, 1) float32
      outputs  state_out (B, C_s, L), changed (B, 1, 1) float32

  Step k runs for a problem only while budget > k; otherwise its state is held. `changed` counts
  the steps that changed the state (fixed-point tasks) or the steps run (generation tasks). A
  discrete map that reaches a fixed point stays there, so a count below the steps run means the
  problem converged, and the count is its exact step number. The host reads B floats per call.

- packed and windowed advance graphs: cheaper variants for the CPU engine (see their docstrings).

- readout graph: the step's logits path alone: (problem, state) -> logits (B, K, L).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .model_file import StepModel


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
    g.output.append(helper.make_tensor_value_info("symbols", TensorProto.INT64, ["batch", "length"]))
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


def _state_path(step: StepModel, cut_edges: bool = False):
    """The step's state path, split for iteration: -> (prologue, body, initializers, shared names).
    cut_edges: pad with zeros even on a ring (a window of a ring has cut edges, not a wrap).

    The rule's first convolution reads [problem; state]. A convolution is linear in its input
    channels, so it is the problem's part (computed once per call, in the prologue) plus the
    state's part (every step): the problem never changes during a solve, and its channels are
    most of the convolution's work. The rest of the path is copied as exported.
    """
    meta = step.metadata
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
    if meta.boundary == "ring" and not cut_edges:
        inits += [numpy_helper.from_array(np.array([v], np.int64), n) for n, v in
                  (("adv_wrap_last", -1), ("adv_wrap_end", np.iinfo(np.int64).max), ("adv_wrap_first", 0),
                   ("adv_wrap_one", 1), ("adv_wrap_axis", 2))]
        wrap = lambda src, dst: [
            helper.make_node("Slice", [src, "adv_wrap_last", "adv_wrap_end", "adv_wrap_axis"], [dst + "_left"]),
            helper.make_node("Slice", [src, "adv_wrap_first", "adv_wrap_one", "adv_wrap_axis"], [dst + "_right"]),
            helper.make_node("Concat", [dst + "_left", src, dst + "_right"], [dst], axis=2)]
        prologue += wrap("problem", "adv_problem_wrapped")
        prologue.append(helper.make_node("Conv", ["adv_problem_wrapped", "adv_w_problem", conv.input[2]], ["adv_features"]))
        per_step += wrap("state", "state_wrapped")
        per_step.append(helper.make_node("Conv", ["state_wrapped", "adv_w_state"], ["state_conv"]))
    else:
        prologue.append(helper.make_node("Conv", ["problem", "adv_w_problem", conv.input[2]], ["adv_features"], pads=[1, 1]))
        per_step.append(helper.make_node("Conv", ["state", "adv_w_state"], ["state_conv"], pads=[1, 1]))
    per_step.append(helper.make_node("Add", ["adv_features", "state_conv"], [conv.output[0]]))
    shared = {t.name for t in inits} | {"adv_features"}
    return prologue, per_step + body, inits, shared


def advance_graph(step: StepModel, k: int) -> onnx.ModelProto:
    if k < 1:
        raise ValueError("k must be >= 1")
    meta = step.metadata
    prologue, body, inits, const_names = _state_path(step)
    consts = {"adv_tolerance": np.float32(meta.tolerance)}
    nodes: list[onnx.NodeProto] = list(prologue)
    state = "state"
    count = None
    generations = meta.convergence == "generations"
    for i in range(k):
        nodes += _step_copy(body, const_names, i, state)
        nxt = f"s{i}_next_state"
        consts[f"adv_k{i}"] = np.float32(i)
        nodes.append(helper.make_node("Greater", ["budget", f"adv_k{i}"], [f"s{i}_active"]))
        nodes.append(helper.make_node("Cast", [f"s{i}_active"], [f"s{i}_active_f"], to=TensorProto.FLOAT))
        if generations:
            counted = f"s{i}_active_f"
        else:
            nodes.append(helper.make_node("Sub", [nxt, state], [f"s{i}_diff"]))
            nodes.append(helper.make_node("Abs", [f"s{i}_diff"], [f"s{i}_absdiff"]))
            nodes.extend(_reduce(f"s{i}_absdiff", f"s{i}_maxdiff", [1, 2], step.opset, consts))
            nodes.append(helper.make_node("Greater", [f"s{i}_maxdiff", "adv_tolerance"], [f"s{i}_moved"]))
            nodes.append(helper.make_node("Cast", [f"s{i}_moved"], [f"s{i}_moved_f"], to=TensorProto.FLOAT))
            nodes.append(helper.make_node("Mul", [f"s{i}_moved_f", f"s{i}_active_f"], [f"s{i}_counted"]))
            counted = f"s{i}_counted"
        out_state = "state_out" if i == k - 1 else f"s{i}_held"
        nodes.append(helper.make_node("Where", [f"s{i}_active", nxt, state], [out_state]))
        if count is None:
            count = counted
        else:
            nodes.append(helper.make_node("Add", [count, counted], [f"s{i}_count"]))
            count = f"s{i}_count"
        state = out_state
    nodes.append(helper.make_node("Identity", [count], ["changed"]))
    inits += [numpy_helper.from_array(np.asarray(v), name=n) for n, v in consts.items()]
    graph = helper.make_graph(
        nodes, f"sead_advance_{k}",
        [_io("problem", ["batch", meta.input_channels, "length"]), _io("state", ["batch", meta.state_channels, "length"]),
         _io("budget", ["batch", 1, 1])],
        [_io("state_out", ["batch", meta.state_channels, "length"]), _io("changed", ["batch", 1, 1])],
        inits,
    )
    return _finish(graph, step, f"advance{k}")


def packed_advance_graph(step: StepModel, k: int, windowed: bool = False) -> onnx.ModelProto:
    """The advance graph for B problems packed end to end into one tape (for CPU engines).

    A CPU convolution over a batch of many short rows is many tiny matrix products; over one long
    row it is one large one. Packing is exact when every row ends with an empty cell (mask 0,
    state 0): that cell is what the rule sees beyond a tape, so neighbours never mix. Only for
    fixed-point line tasks (a ring wraps around).

    No budget gating: a problem that reaches a fixed point stays there, and one that has not
    reached it when its budget runs out is finished (not converged) whatever ran after, so the
    host only clips the count to the budget. That saves most of the per-step bookkeeping.

        inputs   problem (1, C_in, B*L), state (1, C_s, B*L) float32,
                 rows_shape int64 [C_s, B, L]
        outputs  state_out (1, C_s, B*L), changed (1, B, 1): steps that changed each problem

    windowed=True: one window of a long tape (OrtCpuWindowedBatch) instead of packed rows. A
    count_mask (1, 1, N) is 1 on the cells the window owns and 0 on its halo, whose changes are
    not the window's to count, and the output is per-step flags, not a count:

        inputs   problem (1, C_in, N), state (1, C_s, N), count_mask (1, 1, N) float32
        outputs  state_out (1, C_s, N), moved (1, 1, K): 1 where step k changed an owned cell

    A window of a ring (rule110) has cut edges like any other window: zeros, no wrap. Its moved
    flags are not used, since a generations task counts the steps it runs.
    """
    meta = step.metadata
    if not windowed and (meta.boundary == "ring" or meta.convergence != "fixed_point"):
        raise ValueError("packing needs a line task that runs to a fixed point")
    prologue, body, inits, const_names = _state_path(step, cut_edges=windowed)
    consts = {"adv_tolerance": np.float32(meta.tolerance)}
    nodes: list[onnx.NodeProto] = list(prologue)
    state, count, flags = "state", None, []
    for i in range(k):
        nodes += _step_copy(body, const_names, i, state)
        nxt = f"s{i}_next_state"
        nodes.append(helper.make_node("Sub", [nxt, state], [f"s{i}_diff"]))
        if windowed:
            nodes.append(helper.make_node("Mul", [f"s{i}_diff", "count_mask"], [f"s{i}_owned_diff"]))
            nodes.extend(_reduce(f"s{i}_owned_diff", f"s{i}_moved_by", [1, 2], step.opset, consts, "ReduceL1"))
        else:
            nodes.append(helper.make_node("Reshape", [f"s{i}_diff", "rows_shape"], [f"s{i}_diff_rows"]))  # (C_s, B, L)
            nodes.extend(_reduce(f"s{i}_diff_rows", f"s{i}_moved_by", [0, 2], step.opset, consts, "ReduceL1"))  # (1, B, 1)
        nodes += [
            helper.make_node("Greater", [f"s{i}_moved_by", "adv_tolerance"], [f"s{i}_moved"]),
            helper.make_node("Cast", [f"s{i}_moved"], [f"s{i}_counted"], to=TensorProto.FLOAT),
        ]
        flags.append(f"s{i}_counted")
        if not windowed:  # packed rows sum the flags into a count; windows output them as they are
            if count is None:
                count = f"s{i}_counted"
            else:
                nodes.append(helper.make_node("Add", [count, f"s{i}_counted"], [f"s{i}_count"]))
                count = f"s{i}_count"
        state = nxt
    nodes.append(helper.make_node("Identity", [state], ["state_out"]))
    inputs = [_io("problem", [1, meta.input_channels, "cells"]), _io("state", [1, meta.state_channels, "cells"])]
    outputs = [_io("state_out", [1, meta.state_channels, "cells"])]
    if windowed:
        nodes.append(helper.make_node("Concat", flags, ["moved"], axis=2) if k > 1
                     else helper.make_node("Identity", flags, ["moved"]))
        inputs.append(_io("count_mask", [1, 1, "cells"]))
        outputs.append(_io("moved", [1, 1, k]))
    else:
        nodes.append(helper.make_node("Identity", [count], ["changed"]))
        inputs.append(helper.make_tensor_value_info("rows_shape", TensorProto.INT64, [3]))
        outputs.append(_io("changed", [1, "batch", 1]))
    inits += [numpy_helper.from_array(np.asarray(v), name=n) for n, v in consts.items()]
    graph = helper.make_graph(nodes, f"sead_{'windowed' if windowed else 'packed'}_advance_{k}", inputs, outputs, inits)
    return _finish(graph, step, f"packed_advance{k}")


def _reduce(src: str, dst: str, axes: list[int], opset: int, consts: dict, op: str = "ReduceMax") -> list[onnx.NodeProto]:
    """A keepdims reduction over `axes` (opset 18 moved axes from an attribute to an input)."""
    if opset < 18:
        return [helper.make_node(op, [src], [dst], axes=axes, keepdims=1)]
    name = "adv_axes_" + "_".join(map(str, axes))
    consts[name] = np.array(axes, np.int64)
    return [helper.make_node(op, [src, name], [dst], keepdims=1)]
