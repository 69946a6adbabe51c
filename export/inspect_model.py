"""`sead inspect model.onnx`: metadata, inputs and outputs, operator counts, parameter count, and
the lookup forms the runtime can build from the rule."""
from __future__ import annotations

import collections
import dataclasses

import numpy as np

from sead.runtime.class_blocks import ClassTables
from sead.runtime.graph import lookup_tables
from sead.runtime.model_file import load_step_model, parameter_count
from sead.runtime.rule import Rule


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
        "lookup_forms": lookup_forms(Rule.from_step(step)),
    }


def lookup_forms(rule: Rule) -> dict:
    """The lookup layout's digits and blocks, and the class-coded windows' blocks (docs/engines.md),
    or why the rule has none."""
    tables = lookup_tables(rule)
    if tables is None:
        return {"lookup": "none: only a tape rule with a sign state whose whole step fits 2^24 exact entries has one"}
    out = {"lookup": {"digits": tables.n, "step_table_entries": tables.n ** 3, "block_steps": tables.block_steps,
                      "reads": {"left": bool(tables.sides[0]), "right": bool(tables.sides[1])}}}
    try:
        classes = ClassTables(tables)
        longest = classes.classes[classes.block_steps]
        out["classes"] = {"block_steps": classes.block_steps, "class_maps": len(classes.channels),
                          "longest_block_reads": longest, "longest_block_entries": int(np.prod(longest))}
    except ValueError as exc:
        out["classes"] = f"none: {exc}"
    return out
