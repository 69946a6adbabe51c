"""classes: class-coded blocks, tile windows only (runtime/class_blocks.py).

The state (1, C + 1, cells), packed windows: per cell its digit's class in each of the C maps
(channel 0 the digit) and, last, whether the latest step changed it. A block of j steps is an
index convolution, a cast, an Expand to every channel and one GatherElements in its table.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx

from .builder import BOOL, FLOAT, INT32, UINT8, Builder, code_type, tensor_io, window
from .lookup import LookupTables, lookup_finish_nodes, lookup_prepare_nodes, tables_read

if TYPE_CHECKING:
    from ..class_blocks import ClassTables


def _classes_prepare_nodes(b: Builder, t: LookupTables, c: ClassTables, fresh: bool) -> None:
    """From "codes" [and "state_codes"] (1, cells) to "state" (1, C + 1, cells): a digit, then
    its class in every map."""
    lookup_prepare_nodes(b, t, fresh, out="digits")
    index = b.op("Expand", [b.op("Cast", ["digits"], to=INT32), b.const(np.array([1, c.width, 1], np.int64))])
    b.op("GatherElements", [b.const(c.digit_channels), index], "state", axis=2)


def _classes_advance_nodes(b: Builder, c: ClassTables, k: int, expand: bool = True) -> None:
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


def _classes_digits(b: Builder, state: str) -> str:
    return b.op("Slice", [state, b.const([0]), b.const([1]), b.const([1])])


def classes_prepare(t: LookupTables, c: ClassTables, fresh: bool) -> onnx.ModelProto:
    """codes (1, cells) uint8 [, state_codes] -> state (1, C + 1, cells) float."""
    b = Builder("sead_classes_prepare")
    _classes_prepare_nodes(b, t, c, fresh)
    inputs = [tensor_io("codes", UINT8, [1, "cells"])]
    if not fresh:
        inputs.append(tensor_io("state_codes", code_type(t.rule), [1, "cells"]))
    return b.model(inputs, [tensor_io("state", FLOAT, [1, c.width, "cells"])])


def classes_advance(c: ClassTables, k: int, expand: bool = True) -> onnx.ModelProto:
    """K steps, mode hot: state (1, C + 1, cells) and the class tables it reads (ClassTables.inputs)
    -> state_out, hot (1, cells) bool. expand: as _classes_advance_nodes."""
    b = Builder(f"sead_classes_advance_hot_{k}")
    _classes_advance_nodes(b, c, k, expand)
    state = tensor_io("state", FLOAT, [1, c.width, "cells"])
    return b.model([state, *tables_read(b, c.inputs)],
                   [tensor_io("state_out", FLOAT, [1, c.width, "cells"]), tensor_io("hot", BOOL, [1, "cells"])])


def classes_finish(t: LookupTables, c: ClassTables, readout: bool = True) -> onnx.ModelProto:
    """codes (1, cells), state (1, C + 1, cells) -> state_codes [, classes], as lookup_finish."""
    b = Builder("sead_classes_finish")
    lookup_finish_nodes(b, t, _classes_digits(b, "state"), "state_codes", readout)
    outputs = [tensor_io("state_codes", code_type(t.rule), [1, "cells"])]
    if readout:
        outputs.append(tensor_io("classes", UINT8, [1, "cells"]))
    return b.model([tensor_io("codes", UINT8, [1, "cells"]), tensor_io("state", FLOAT, [1, c.width, "cells"])], outputs)


def classes_window(t: LookupTables, c: ClassTables, k: int, fresh: bool) -> onnx.ModelProto:
    """Tile windows in one graph, as cf_window in mode hot (same inputs and outputs, and the class
    tables it reads)."""
    return window(t.rule, k, "hot", fresh, f"sead_classes_window_hot_{k}",
                   lambda b, _, fresh, wrap: _classes_prepare_nodes(b, t, c, fresh),
                   lambda b: _classes_advance_nodes(b, c, k),
                   lambda b, _, state, state_codes, readout: lookup_finish_nodes(b, t, _classes_digits(b, state),
                                                                                 state_codes, readout),
                   extra_inputs=lambda b: tables_read(b, c.inputs))
