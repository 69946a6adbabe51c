"""`sead inspect model.onnx`: metadata, inputs and outputs, operator counts, parameter count."""
from __future__ import annotations

import collections
import dataclasses

from sead.runtime.model_file import load_step_model, parameter_count


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def inspect_model(name_or_path: str) -> dict:
    """Loading runs every check of load_step_model, the ONNX checker's full check included."""
    step = load_step_model(name_or_path)
    g = step.proto.graph
    return {
        "path": step.path,
        "opset": step.opset,
        "metadata": dataclasses.asdict(step.metadata),
        "inputs": {i.name: _dims(i) for i in g.input},
        "outputs": {o.name: _dims(o) for o in g.output},
        "operators": dict(sorted(collections.Counter(n.op_type for n in g.node).items())),
        "parameters": parameter_count(step.proto),
    }
