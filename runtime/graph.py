"""Graphs the runtime derives from the exported single step (onnx graph surgery, no torch).

- advance graph: K copies of the step's state path, chained, with a per-problem step budget and
  a per-problem count of the steps that changed the state:

      inputs   problem (B, C_in, L), state (B, C_s, L), budget (B, 1, 1) float32
      outputs  state_out (B, C_s, L), changed (B, 1, 1) float32

  Step k runs for a problem only while budget > k; otherwise its state is held. `changed` counts
  the steps that changed the state (fixed-point tasks) or the steps run (generation tasks). A
  discrete map that reaches a fixed point stays there, so a count below the steps run means the
  problem converged, and the count is its exact step number. The host reads B floats per call.

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


def advance_graph(step: StepModel, k: int) -> onnx.ModelProto:
    if k < 1:
        raise ValueError("k must be >= 1")
    meta = step.metadata
    g = step.proto.graph
    body = _needed_nodes(g, ["next_state"])
    used = {i for n in body for i in n.input}
    inits = [t for t in g.initializer if t.name in used]
    const_names = {t.name for t in inits}
    consts = {
        "adv_tolerance": np.float32(meta.tolerance),
        "adv_zero": np.float32(0.0),
    }
    nodes: list[onnx.NodeProto] = []
    state = "state"
    count = None
    generations = meta.convergence == "generations"
    for i in range(k):
        rename = lambda t: t if t in const_names or t == "problem" else (state if t == "state" else f"s{i}_{t}")
        for node in body:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            copy.name = f"s{i}_{node.name}"
            copy.input[:] = [rename(t) for t in node.input]
            copy.output[:] = [rename(t) for t in node.output]
            nodes.append(copy)
        nxt = f"s{i}_next_state"
        consts[f"adv_k{i}"] = np.float32(i)
        nodes.append(helper.make_node("Greater", ["budget", f"adv_k{i}"], [f"s{i}_active"]))
        nodes.append(helper.make_node("Cast", [f"s{i}_active"], [f"s{i}_active_f"], to=TensorProto.FLOAT))
        if generations:
            counted = f"s{i}_active_f"
        else:
            nodes.append(helper.make_node("Sub", [nxt, state], [f"s{i}_diff"]))
            nodes.append(helper.make_node("Abs", [f"s{i}_diff"], [f"s{i}_absdiff"]))
            nodes.extend(_reduce_max(f"s{i}_absdiff", f"s{i}_maxdiff", step.opset, consts))
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


def _reduce_max(src: str, dst: str, opset: int, consts: dict) -> list[onnx.NodeProto]:
    """Max over channel and length axes, keepdims: (B, C, L) -> (B, 1, 1)."""
    if opset < 18:
        return [helper.make_node("ReduceMax", [src], [dst], axes=[1, 2], keepdims=1)]
    consts["adv_axes"] = np.array([1, 2], np.int64)
    return [helper.make_node("ReduceMax", [src, "adv_axes"], [dst], keepdims=1)]
