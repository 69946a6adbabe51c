"""The graphs every engine runs, built from the rule's weights (runtime/rule.py). numpy + onnx only.

Three graphs per batch of rows, so that codes go in and classes come out and the state stays on
the device between calls:

    prepare   codes (uint8 per cell) [+ state codes]  ->  the problem's share of the first layer,
              computed once per batch, the mask, and the working state
    advance   K steps of the rule on the working state (one graph per K), with what the loop needs
              back: per-row counts of changing steps, or the cells that changed at the last step
    finish    the working state -> state codes (uint8/16 per cell) and the readout's classes

The problem never changes during a solve, so its share of the first convolution (most of its
input channels) is computed once in `prepare` instead of at every step, and the readout runs once
at the end. Three layouts of the same rule, and a fourth for tile windows:

- "lookup" (tape rules whose whole step fits a table, Rule.step_table): one number a cell, and a
  step is a lookup of the next in a table of every neighbourhood; where the numbers are few, one
  lookup makes several steps. ONNX Runtime's CPU provider runs this form fastest where it exists.
- "cf" (channels first, sign states): rows (B, C, L) or grids (B, C, H, W); neighbours through a
  convolution over the state channels. Rows that each end in an empty cell are packed end to end,
  (1, C, B*L): one long convolution instead of B short ones (what lies beyond a row is what lies
  beyond a tape, an empty cell). The CPU's form for grids.
- "classes" (tile windows of a lookup rule, runtime/class_blocks.py): blocks of many steps a
  lookup, from a state of a few channels that hold the classes of each cell's number that the
  blocks read.
- "cl" (channels last, flat): the cells of a batch as one list (N, C) plus one empty cell at the
  end (index N), with a neighbour table (N + 1, taps) int64 made by the host once per batch shape
  (runtime/layout.py): any topology (tapes, rings, grids, tile windows) is the same graph. A
  sign state's neighbours are gathered and multiplied (a skinny matrix product); a symbol state is
  one class per cell, so its part of the first layer is a table lookup per neighbour instead of a
  convolution over `classes` one-hot channels.

Exactness: cf and cl sum the rule's products in another order than the exported convolution,
which can flip a decision only where its margin is within float rounding (export/verify.py checks
the margins of every form); the lookup form's table is refused where any entry could. fp32
throughout; engines must not use TF32 or fp16.
"""
from .builder import OPSET
from .cf import cf_advance, cf_finish, cf_prepare, cf_window
from .cl import cl_advance, cl_finish, cl_prepare
from .classes import classes_advance, classes_finish, classes_prepare, classes_window
from .lookup import (NEVER, LookupTables, block_plan, lookup_advance, lookup_finish, lookup_prepare, lookup_tables,
                     lookup_window)

__all__ = ["OPSET", "NEVER", "LookupTables", "block_plan", "lookup_tables",
           "cf_prepare", "cf_advance", "cf_finish", "cf_window", "cl_prepare", "cl_advance", "cl_finish",
           "lookup_prepare", "lookup_advance", "lookup_finish", "lookup_window",
           "classes_prepare", "classes_advance", "classes_finish", "classes_window"]
