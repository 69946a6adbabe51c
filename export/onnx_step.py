"""Write ONE SEAD step as an ONNX graph, built node by node from the checkpoint's weights.

The graph is spelled out by hand rather than traced so that it holds only operators every target
engine runs (Concat, Slice, Conv, Relu, Greater, Where, Mul; a symbol state adds ArgMax, Equal,
Cast, Identity) and no shape arithmetic at all: constant-size pads, constant slices, dynamic batch
and length axes.

    inputs   problem    (B, C_in, *S) float32   the encoded problem, bound once per solve
             state      (B, C_s, *S)  float32   the evolving state: -1/+1 (sign) or one-hot (symbol);
                                                0 before the first step
    outputs  next_state (B, C_s, *S)  float32   one local update of `state`
             logits     (B, K, *S)    float32   the readout of the *input* state

S is (L,) for a tape (rank 1) and (H, W) for a grid (rank 2): the same graph with 3x3 kernels.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sead.runtime.model_file import METADATA_VERSION, StepMetadata, cell_axes
from sead.runtime.tasks import get_task

DEFAULT_OPSET = 17
SUPPORTED_OPSETS = range(17, 22)
INT64_MAX = np.iinfo(np.int64).max


def build_step_graph(model, metadata: StepMetadata, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """model: a sead.train.model.SEAD (weights are read, nothing is traced)."""
    if opset not in SUPPORTED_OPSETS:
        raise ValueError(f"opset {opset} is not supported; choose {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}")
    cfg = model.config
    weights = {k: v.cpu().numpy().astype(np.float32) for k, v in model.step_weights().items()}
    inits = [numpy_helper.from_array(v, name=k) for k, v in weights.items()]
    const = lambda name, value: inits.append(numpy_helper.from_array(np.asarray(value), name=name))
    const("one", np.float32(1.0))
    const("minus_one", np.float32(-1.0))
    const("zero", np.float32(0.0))
    const("mask_start", np.array([0], np.int64))
    const("mask_end", np.array([1], np.int64))
    const("axis_channel", np.array([1], np.int64))

    nodes = [helper.make_node("Concat", ["problem", "state"], ["cells"], axis=1, name="concat_cells")]
    if cfg.boundary == "ring":
        # wrap the ring with two constant one-cell slices: no shape-dependent ops
        const("last_start", np.array([-1], np.int64))
        const("last_end", np.array([INT64_MAX], np.int64))
        const("axis_length", np.array([2], np.int64))
        nodes += [
            helper.make_node("Slice", ["cells", "last_start", "last_end", "axis_length"], ["wrap_left"], name="wrap_left"),
            helper.make_node("Slice", ["cells", "mask_start", "mask_end", "axis_length"], ["wrap_right"], name="wrap_right"),
            helper.make_node("Concat", ["wrap_left", "cells", "wrap_right"], ["padded"], axis=2, name="wrap"),
            helper.make_node("Conv", ["padded", "rule_in.weight", "rule_in.bias"], ["rule_hidden_pre"], name="rule_in"),
        ]
    else:
        nodes.append(helper.make_node("Conv", ["cells", "rule_in.weight", "rule_in.bias"], ["rule_hidden_pre"],
                                      pads=[1] * 2 * cfg.rank, name="rule_in"))
    nodes += [
        helper.make_node("Relu", ["rule_hidden_pre"], ["rule_hidden"], name="rule_relu"),
        helper.make_node("Conv", ["rule_hidden", "rule_out.weight", "rule_out.bias"], ["rule_pre"], name="rule_out"),
    ]
    if cfg.state == "symbol":  # one-hot of the first largest channel (ArgMax's and torch's tie rule)
        const("class_index", np.arange(cfg.classes, dtype=np.int64).reshape(-1, *[1] * cfg.rank))
        nodes += [
            helper.make_node("ArgMax", ["rule_pre"], ["rule_class"], axis=1, keepdims=1, name="symbol_argmax"),
            helper.make_node("Equal", ["rule_class", "class_index"], ["rule_is_class"], name="symbol_test"),
            helper.make_node("Cast", ["rule_is_class"], ["rule_discrete"], to=TensorProto.FLOAT, name="symbol"),
        ]
        readout = [helper.make_node("Identity", ["state"], ["logits"], name="read_state")]  # the state is its readout
    else:
        nodes += [
            helper.make_node("Greater", ["rule_pre", "zero"], ["rule_positive"], name="sign_test"),
            helper.make_node("Where", ["rule_positive", "one", "minus_one"], ["rule_discrete"], name="sign"),
        ]
        readout = [
            helper.make_node("Conv", ["cells", "read_in.weight", "read_in.bias"], ["read_hidden_pre"], name="read_in"),
            helper.make_node("Relu", ["read_hidden_pre"], ["read_hidden"], name="read_relu"),
            helper.make_node("Conv", ["read_hidden", "read_out.weight", "read_out.bias"], ["logits"], name="read_out"),
        ]
    nodes += [
        helper.make_node("Slice", ["problem", "mask_start", "mask_end", "axis_channel"], ["mask"], name="mask"),
        helper.make_node("Mul", ["rule_discrete", "mask"], ["next_state"], name="apply_mask"),
    ] + readout
    tensor = lambda name, channels: helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                                                  ["batch", channels, *cell_axes(cfg.rank)])
    graph = helper.make_graph(
        nodes, f"sead_{cfg.task}_step",
        inputs=[tensor("problem", cfg.input_channels), tensor("state", cfg.state_channels)],
        outputs=[tensor("next_state", cfg.state_channels), tensor("logits", cfg.classes)],
        initializer=inits,
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                                   producer_name="sead", producer_version=metadata.sead_version)
    onnx_model.ir_version = 8 if opset <= 17 else 9
    helper.set_model_props(onnx_model, metadata.to_props())
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model


def metadata_for(model, payload: dict, checkpoint_sha256: str, sead_version: str) -> StepMetadata:
    cfg = model.config
    task = get_task(cfg.task)
    record = payload.get("record", {})
    return StepMetadata(
        format_version=METADATA_VERSION,
        task=cfg.task,
        sead_version=sead_version,
        input_channels=cfg.input_channels,
        state_channels=cfg.state_channels,
        classes=cfg.classes,
        boundary=cfg.boundary,
        convergence=task.convergence,
        tolerance=0.0,
        radius=1,
        train_max_cells=int(record.get("max_train_cells", 16)),
        parameters=sum(w.numel() for w in model.step_weights().values()),  # the graph's, as exported
        checkpoint_sha256=checkpoint_sha256,
        model_config=json.dumps(dict(vars(cfg)), sort_keys=True),
        rank=cfg.rank,
        state=cfg.state,
        verified_size=int(record.get("verified_size", 0)),
    )
