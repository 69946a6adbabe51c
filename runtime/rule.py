"""The rule of an exported step, as numbers: the one source every runtime graph is built from.

An exported step (export/onnx_step.py) is one fixed pattern of operators:

    cells = [problem; state]            (wrapped around for a ring)
    pre   = W_out relu(W_in *3 cells + b_in) + b_out
    next_state = mask * discrete(pre)   sign: +1 where pre > 0 else -1; symbol: one-hot argmax
    logits     = readout(cells)         sign: R_out relu(R_in cells + r_in) + r_out; symbol: the state

`Rule.from_step` checks that a graph is exactly that pattern and reads its weights; anything else
is refused, so the runtime's own forms of the rule (runtime/graph/) compute the same function
as the file. Those forms sum in a different order than the step's convolution, which can only
flip a decision whose margin is within float rounding: export/verify.py checks the margins.

The state of a cell at rest is one integer, its *code* (runtime/tiles.py keeps long tapes so):
sign: the bits of its channels (bit c set where channel c is +1); symbol: its class. `zero_code`
is the all-zero state of empty cells and of every cell before the first step.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .errors import ModelFileError

MAX_SIGN_CHANNELS = 16  # a sign state's code must fit an int32 and its tables stay small (2^16 rows)
STEP_TABLE_ENTRIES = 1 << 24  # a tape rule's whole step as a table, if it is this small (a float32 index is exact)
UNIT_ROUNDOFF = 2.0 ** -24  # float32's


@dataclass(frozen=True, eq=False)
class Rule:
    rank: int                 # 1: tapes (taps 3); 2: grids (taps 3x3)
    ring: bool                # each row wraps around (a ring); otherwise zeros lie beyond the ends
    state_code: str           # "sign" or "symbol"
    input_channels: int       # C_in: the mask, then the one-hot cell symbol
    state_channels: int       # C_s
    classes: int
    w_in: np.ndarray          # (H, C_in + C_s, 3[, 3]) float32: the rule's first convolution
    b_in: np.ndarray          # (H,)
    w_out: np.ndarray         # (C_s, H)
    b_out: np.ndarray         # (C_s,)
    read_in: np.ndarray | None = None       # sign: (R, C_in + C_s), with read_in_bias (R,)
    read_in_bias: np.ndarray | None = None
    read_out: np.ndarray | None = None      # sign: (classes, R), with read_out_bias (classes,)
    read_out_bias: np.ndarray | None = None

    @property
    def hidden(self) -> int:
        return self.w_in.shape[0]

    @property
    def taps(self) -> int:
        return 3 ** self.rank

    @property
    def zero_code(self) -> int:
        return 1 << self.state_channels if self.state_code == "sign" else self.state_channels

    @property
    def code_dtype(self) -> type:
        """The smallest unsigned type that holds every code, zero_code included."""
        return np.uint8 if self.zero_code < 256 else np.uint16 if self.zero_code < 65536 else np.uint32

    def tap_weights(self, part: str) -> np.ndarray:
        """(taps, H, C) float32: the first convolution's weights per neighbour offset, for the
        problem channels ("problem") or the state channels ("state"). Taps run over the offsets
        in row-major order: (-1, 0, +1) on a tape; (dy, dx) with dy, dx in (-1, 0, +1) on a grid."""
        c = self.input_channels
        w = self.w_in[:, :c] if part == "problem" else self.w_in[:, c:]
        return np.ascontiguousarray(w.reshape(w.shape[0], w.shape[1], self.taps).transpose(2, 0, 1))

    @property
    def code_bits(self) -> np.ndarray:
        """Sign states: (2^C_s, C_s) int64, bit c of every state code z (channel c is +1 where set)."""
        z = np.arange(1 << self.state_channels)
        return (z[:, None] >> np.arange(self.state_channels)) & 1

    def readout_table(self) -> np.ndarray:
        """Sign states: (C_in, 2^C_s + 1) uint8, the readout's class of a cell with code c (0 empty,
        1 + s) and state code z (zero_code, the last column: the state before the first step): the
        readout reads the cell's own problem and state alone (1x1 convolutions), so its every
        outcome fits a table. Computed as the exported graph computes it, in float32 (the argmax
        keeps the first largest)."""
        c_in, c_s = self.input_channels, self.state_channels
        sign = (self.code_bits * 2 - 1).astype(np.float32)  # (2^C_s, C_s)
        sign = np.concatenate([sign, np.zeros((1, c_s), np.float32)])  # the zero state
        problem = np.zeros((c_in, c_in), np.float32)  # one row per code: mask + one-hot symbol
        problem[1:, 0] = 1
        problem[np.arange(1, c_in), np.arange(1, c_in)] = 1
        r_p, r_s = self.read_in[:, :c_in], self.read_in[:, c_in:]
        table = np.empty((c_in, (1 << c_s) + 1), np.uint8)
        for code in range(c_in):
            state = sign if code else np.zeros_like(sign)  # an empty cell holds no state
            hidden = np.maximum(problem[code] @ r_p.T + state @ r_s.T + self.read_in_bias, np.float32(0))
            table[code] = (hidden @ self.read_out.T + self.read_out_bias).argmax(1)
        return table

    def problem_table(self, less_state_mask: bool = False) -> np.ndarray:
        """(R, C_in^3, H) float32, R = 3^(rank - 1): the problem's share of the first layer from one
        row of the neighbourhood (a tape's only row; a grid's rows above, through and below the
        cell), for every (left, own, right) code triple of that row; the bias is in the middle
        row's. A cell's share is the sum of its rows' entries. Summed in float64, rounded once.
        less_state_mask: also less the state weights' sum over each real neighbour (the cf form's
        fold, runtime/graph/cf.py)."""
        c_in = self.input_channels
        w = self.tap_weights("problem").astype(np.float64)  # (taps, H, C_in)
        taps = np.zeros((self.taps, c_in, self.hidden))  # (tap, code) -> contribution
        taps[:, 1:] = (w[:, :, :1] + w[:, :, 1:]).transpose(0, 2, 1)
        if less_state_mask:
            taps[:, 1:] -= self.tap_weights("state").astype(np.float64).sum(axis=2)[:, None, :]
        rows = taps.reshape(-1, 3, c_in, self.hidden)  # taps run row-major: (row, tap along it, ...)
        total = rows[:, 0, :, None, None] + rows[:, 1, None, :, None] + rows[:, 2, None, None, :]
        total[len(total) // 2] += self.b_in.astype(np.float64)
        return total.reshape(len(total), -1, self.hidden).astype(np.float32)

    def step_table(self, max_entries: int = STEP_TABLE_ENTRIES) -> np.ndarray | None:
        """Tapes with a sign state: the whole step as a table, (C_in^3 V^3,) float32 with V =
        2^C_s + 1. Entry t V^3 + l V^2 + o V + r is the next state value (0: the zero state, else
        1 + its code) of a cell whose (left, own, right) problem codes make t = (left C_in + own)
        C_in + right and whose neighbours' and own state values are l, r and o. Computed in
        float64 once per rule and shared (read-only); None where it would pass max_entries (or
        2^24, past which a float32 index would not be exact), or where some entry's decision lies
        within a bound on float32 rounding (any summation order), so that every entry is what the
        exported step decides in float32 on that neighbourhood."""
        entries = self.input_channels ** 3 * ((1 << self.state_channels) + 1) ** 3
        if self.rank != 1 or self.state_code != "sign" or entries > min(max_entries, 1 << 24):
            return None
        return self._step_table

    @cached_property
    def _step_table(self) -> np.ndarray | None:
        """step_table's computation, without its size limit."""
        c_in, c_s = self.input_channels, self.state_channels
        signs = np.concatenate([np.zeros((1, c_s)), self.code_bits * 2.0 - 1])  # (V, C_s)
        w_p, w_s = self.tap_weights("problem").astype(np.float64), self.tap_weights("state").astype(np.float64)
        taps = np.zeros((2, 3, c_in, self.hidden))  # (value, |value|) a neighbour's code adds, by tap
        taps[0, :, 1:] = (w_p[:, :, :1] + w_p[:, :, 1:]).transpose(0, 2, 1)
        taps[1, :, 1:] = (np.abs(w_p[:, :, :1]) + np.abs(w_p[:, :, 1:])).transpose(0, 2, 1)
        b_in = np.stack([self.b_in, np.abs(self.b_in)]).astype(np.float64)[:, None, None, None]
        problem = (taps[:, 0][:, :, None, None] + taps[:, 1][:, None, :, None] + taps[:, 2][:, None, None, :]
                   + b_in).reshape(2, -1, self.hidden)  # (2, T, H)
        state = [(signs @ w_s[t].T, np.abs(signs) @ np.abs(w_s[t]).T) for t in range(3)]  # (V, H) each
        w_out, b_out = self.w_out.astype(np.float64), self.b_out.astype(np.float64)
        own_real = (np.arange(c_in ** 3) // c_in) % c_in > 0  # by problem triple: the own code is not empty
        v3 = len(signs) ** 3
        table = np.empty(c_in ** 3 * v3, np.float32)
        chunk = max(1, (1 << 14) // v3)  # problem triples at a time: temporaries that stay in cache
        for lo in range(0, c_in ** 3, chunk):
            part = problem[:, lo:lo + chunk]
            h, h_abs = ((part[i][:, None, None, None] + state[0][i][None, :, None, None]
                         + state[1][i][None, None, :, None] + state[2][i][None, None, None, :]).reshape(-1, self.hidden)
                        for i in (0, 1))
            # float32 error bounds: a sum of n terms is off by at most about n u times their sizes (2x margin)
            h_err = 2 * (3 * (2 + c_s) + 1) * UNIT_ROUNDOFF * h_abs
            relu = np.maximum(h, 0)
            pre = relu @ w_out.T + b_out  # (entries, C_s)
            pre_err = h_err @ np.abs(w_out).T + 2 * (self.hidden + 1) * UNIT_ROUNDOFF * (
                (relu + h_err) @ np.abs(w_out).T + np.abs(b_out))
            real = np.repeat(own_real[lo:lo + chunk], v3)
            if (real[:, None] & (np.abs(pre) <= pre_err)).any():
                return None
            table[lo * v3:lo * v3 + len(real)] = np.where(real, 1 + (pre > 0) @ (2 ** np.arange(c_s)), 0)
        table.flags.writeable = False
        return table

    @classmethod
    def from_step(cls, step) -> "Rule":
        """Read the rule of a loaded StepModel; ModelFileError if the graph is not a sead step."""
        return _read(step)


def _read(step) -> Rule:
    from onnx import numpy_helper

    meta, g, path = step.metadata, step.proto.graph, step.path
    weights = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    produced = {o: n for n in g.node for o in n.output}

    def refuse(what: str):
        raise ModelFileError(f"{path}: not a sead step graph ({what}); re-export it with `sead export`")

    def node(tensor: str, op: str):
        n = produced.get(tensor)
        if n is None or n.op_type != op:
            refuse(f"{tensor!r} should come from {op}, found {n.op_type if n is not None else 'no node'}")
        return n

    def const(name: str) -> np.ndarray:
        if name not in weights:
            refuse(f"{name!r} should be a stored constant")
        return weights[name]

    def attrs(n) -> dict:
        from onnx import helper
        return {a.name: helper.get_attribute_value(a) for a in n.attribute}

    def conv(n, kernel: int, pads: int):
        a = attrs(n)
        w, b = const(n.input[1]), const(n.input[2]) if len(n.input) > 2 else None
        if b is None or w.ndim != 2 + meta.rank or any(d != kernel for d in w.shape[2:]):
            refuse(f"convolution {n.name or n.output[0]!r} should be {kernel}-wide with a bias")
        if a.get("group", 1) != 1 or any(v != 1 for v in a.get("strides", [1]) + a.get("dilations", [1])) \
                or any(v != pads for v in a.get("pads", [0])) or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            refuse(f"convolution {n.name or n.output[0]!r} has unexpected strides, dilations, groups or pads")
        return w.astype(np.float32), b.astype(np.float32)

    def is_problem_state_concat(tensor: str) -> bool:
        n = produced.get(tensor)
        return n is not None and n.op_type == "Concat" and list(n.input) == ["problem", "state"] \
            and attrs(n).get("axis") == 1

    # next_state = Mul(discrete, mask) with mask = problem[:, 0:1]
    mul = node("next_state", "Mul")
    discrete, mask = mul.input
    sl = node(mask, "Slice")
    if sl.input[0] != "problem" or [const(t).tolist() for t in sl.input[1:4]] != [[0], [1], [1]]:
        refuse("the state should be multiplied by problem channel 0 (the mask)")
    if meta.state == "sign":
        where = node(discrete, "Where")
        greater = node(where.input[0], "Greater")
        if const(where.input[1]).tolist() != 1.0 or const(where.input[2]).tolist() != -1.0 \
                or const(greater.input[1]).tolist() != 0.0:
            refuse("a sign state should be Where(pre > 0, 1, -1)")
        pre = greater.input[0]
    else:
        cast = node(discrete, "Cast")
        equal = node(cast.input[0], "Equal")
        argmax = node(equal.input[0], "ArgMax")
        a = attrs(argmax)
        index = const(equal.input[1]).reshape(-1)
        if a.get("axis") != 1 or a.get("keepdims", 1) != 1 or a.get("select_last_index", 0) != 0 \
                or index.tolist() != list(range(meta.classes)):
            refuse("a symbol state should be the one-hot of the first largest channel")
        pre = argmax.input[0]
    w_out, b_out = conv(node(pre, "Conv"), 1, 0)
    relu = node(produced[pre].input[0], "Relu")
    first = node(relu.input[0], "Conv")
    if meta.boundary == "ring":
        wrap = node(first.input[0], "Concat")
        if len(wrap.input) != 3 or not is_problem_state_concat(wrap.input[1]):
            refuse("a ring's cells should be wrapped around [problem; state]")
        w_in, b_in = conv(first, 3, 0)
    else:
        if not is_problem_state_concat(first.input[0]):
            refuse("the rule's convolution should read [problem; state]")
        w_in, b_in = conv(first, 3, 1)
    c_in, c_s = meta.input_channels, meta.state_channels
    if w_in.shape[1] != c_in + c_s or w_out.shape[:2] != (c_s, w_in.shape[0]):
        refuse("the rule's convolutions do not match its channel counts")
    if meta.state == "sign" and c_s > MAX_SIGN_CHANNELS:
        raise ModelFileError(f"{path}: a sign state of {c_s} channels; this runtime runs at most {MAX_SIGN_CHANNELS}")
    readout = {}
    if meta.state == "sign":
        r_out = node("logits", "Conv")
        r_relu = node(r_out.input[0], "Relu")
        r_in = node(r_relu.input[0], "Conv")
        if not is_problem_state_concat(r_in.input[0]):
            refuse("the readout should read [problem; state]")
        (ri, rib), (ro, rob) = conv(r_in, 1, 0), conv(r_out, 1, 0)
        readout = dict(read_in=ri.reshape(ri.shape[:2]), read_in_bias=rib,
                       read_out=ro.reshape(ro.shape[:2]), read_out_bias=rob)
    elif list(node("logits", "Identity").input) != ["state"]:
        refuse("a symbol state should be its own readout")
    rule = Rule(rank=meta.rank, ring=meta.boundary == "ring", state_code=meta.state, input_channels=c_in,
                state_channels=c_s, classes=meta.classes, w_in=w_in, b_in=b_in,
                w_out=w_out.reshape(w_out.shape[:2]), b_out=b_out, **readout)
    arrays = [rule.w_in, rule.b_in, rule.w_out, rule.b_out] + list(readout.values())
    if not all(np.isfinite(a).all() for a in arrays):
        raise ModelFileError(f"{path}: weights hold NaN or infinite values; no answer from it could be trusted")
    return rule
