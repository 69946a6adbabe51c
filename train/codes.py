"""State codes: what each cell of a sign state holds, as ±1 bits, and the automaton on those bits.
Four codes: `carry_thermometer` (multiplication, below), `carry_in` (addition, class CarryIn),
`parity_front` (parity, class ParityFront) and `set_value` (rule110, class SetValue).

A code gives a sign state what a symbol state has by construction, a known state at every step:
the rule is trained to *be* the code's automaton (train/coded.py), one step at a time, on random
states; the readout learns the classes from the bits.

`carry_thermometer` (multiplication, 13 channels) holds the carry-save array's (s, c) at each cell,
with c split as c = floor(p / 10) + k. The cell below reads the partial product p of the cell above
from the problem, so the state carries only the small carry k = c - floor(p / 10), 0 to 2, and
s, 0 to 9, as thermometers (bit m is +1 where the value is at least m). A carry has one direction
per row: down on the product rows, right along the margin row (its ripple carry), each in channels
of its own that hold -1 on the other rows, so no cell has to tell which of its neighbours'
carries it adds:

    channels 0..8    s >= 1, ..., s >= 9
    channels 9..10   k >= 1, k >= 2 on the product rows (read by the cell below; -1 on the margin)
    channels 11..12  k >= 1, k >= 2 on the margin row (read by the cell to the right; -1 elsewhere)

A cell reads a thermometer by its count of +1 bits, so every sum below is linear in the bits:

    v = (p mod 10) + s(up-right) + floor(p(up) / 10) + k_down(up) + k_right(left)
    k' = [v >= 10] + [v >= 20]   (into the row's carry channels; the other pair -1)
    s' = clip(v - 10 k(own), 0, 9)

s follows k by one step (it subtracts the cell's own carry of the step before), so every new bit
is one threshold of a sum of three numbers: v, the cell's own k and the margin mark. The automaton
settles from *any* ±1 state: a cell's k depends only on its neighbours' values up, up-right and
left, its s on those and its own k, and that dependency has no cycle (depth about 2 n_a + n_b).
At its fixed point v = s + 10 k is the carry-save array's column sum, so the readout's class
s + 10 c is the task's target unchanged, and linear in a cell's problem and bits
(s + 10 floor(p / 10) + 10 k): one hidden unit holds class / 10 (fitted by least squares,
train/coded.py), and a fixed output layer (rounding_readout) picks the class nearest 10 h.
"""
from __future__ import annotations

import numpy as np
import torch

from sead.runtime.tasks import Parsed
from sead.runtime.tasks.multiplication import MARGIN, PRODUCTS, _digits_low_first, csa_state
from sead.runtime.tasks.rule110 import rule110_generation

READOUT_SCALE = 10.0  # the readout's hidden unit holds class / READOUT_SCALE


class CarryThermometer:
    """multiplication: s and k = c - floor(p / 10) as thermometers (module docstring)."""

    task = "multiplication"
    channels = 13
    S_BITS, K_BITS = 9, 2
    # training states (train/coded.py): a share of cells hold uniformly random bits instead of a
    # code, a share hold high values (s 6..9, k 1..2: the sums near 20 are rare otherwise)
    RANDOM_SHARE, HIGH_SHARE = 0.3, 0.3
    # loss weights: the margin row is one row in n_a + 1; a +1 bit is the rarer one of a thermometer
    MARGIN_WEIGHT, POSITIVE_WEIGHT = 3.0, 3.0
    _VALUE = torch.tensor([0.0, *map(float, PRODUCTS), 0.0])  # each input channel's partial product
    _LEVELS = np.concatenate([np.arange(1, S_BITS + 1), np.arange(1, K_BITS + 1), np.arange(1, K_BITS + 1)])

    def parts(self, p: Parsed) -> tuple[np.ndarray, np.ndarray]:
        """(s, k), each shape(p) int64: the carry-save array's digit and small carry per cell."""
        s, c = csa_state(p.a, p.b)
        da, db = _digits_low_first(p.a), _digits_low_first(p.b)
        high = np.zeros_like(c)
        high[: len(da)] = np.outer(da, db) // 10
        return s, c - high

    def bits(self, p: Parsed) -> np.ndarray:
        """(channels, *shape(p)) float32: the fixed point's bits, each -1 or +1."""
        s, k = self.parts(p)
        down, right = k.copy(), np.zeros_like(k)
        down[-1], right[-1] = 0, k[-1]
        return self.encode(s, down, right)

    def encode(self, s: np.ndarray, down: np.ndarray, right: np.ndarray) -> np.ndarray:
        """s, the carries down and right (*S) int -> (channels, *S) float32 thermometer bits."""
        values = np.concatenate([np.broadcast_to(s, (self.S_BITS, *s.shape)),
                                 np.broadcast_to(down, (self.K_BITS, *s.shape)),
                                 np.broadcast_to(right, (self.K_BITS, *s.shape))])
        return np.where(values >= self._LEVELS.reshape(-1, *[1] * s.ndim), 1.0, -1.0).astype(np.float32)

    def random_states(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """(B, channels, H, W): a training state for problems x (B, C_in, H, W): per cell the code of
        random values (high ones for HIGH_SHARE of cells), or random bits (RANDOM_SHARE); 0 on padding."""
        b, _, h, w = x.shape
        draw = lambda low, top: torch.randint(low, top, (b, h, w), generator=gen).numpy()
        high = torch.rand((b, h, w), generator=gen).numpy() < self.HIGH_SHARE
        s = np.where(high, draw(6, 10), draw(0, 10))
        k = np.where(high, draw(1, 3), draw(0, 3))
        margin = (x[:, MARGIN + 1] > 0).numpy()
        coded = torch.from_numpy(np.moveaxis(self.encode(s, np.where(margin, 0, k), np.where(margin, k, 0)), 0, 1).copy())
        noise = torch.randint(0, 2, coded.shape, generator=gen).float() * 2 - 1
        pick = torch.rand((b, 1, h, w), generator=gen) < self.RANDOM_SHARE
        return torch.where(pick, noise, coded) * x[:, :1]

    def transition(self, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """The code's automaton, one step: problems x (B, C_in, H, W), a ±1 state (B, channels, H, W)
        (0 on padding) -> the next state's bits (module docstring)."""
        count = lambda lo, hi: (state[:, lo:hi] > 0).sum(1)
        s, down, right = count(0, 9), count(9, 11), count(11, 13)
        p = torch.einsum("bchw,c->bhw", x[:, : len(self._VALUE)], self._VALUE).long()
        v = p % 10 + _shifted(s, -1, 1) + _shifted(p, -1, 0) // 10 + _shifted(down, -1, 0) + _shifted(right, 0, -1)
        k = (v >= 10).long() + (v >= 20).long()
        margin = x[:, MARGIN + 1] > 0
        bits = self.encode((v - 10 * (down + right)).clamp(0, 9).numpy(), torch.where(margin, 0, k).numpy(),
                           torch.where(margin, k, 0).numpy())
        return torch.from_numpy(np.moveaxis(bits, 0, 1).copy()) * x[:, :1]

    def loss_weight(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(B, channels, H, W): each bit's weight in the transition loss (0 on padding)."""
        margin_row = 1.0 + (self.MARGIN_WEIGHT - 1.0) * x[:, MARGIN + 1 : MARGIN + 2]
        return torch.where(target > 0, self.POSITIVE_WEIGHT, 1.0) * margin_row * x[:, :1]


class CarryIn:
    """addition, 2 channels: the carry into each cell, and whether that carry turns its digit to 0.

    A cell holds the column sum s_i = a_i + b_i (its problem symbol, 0 to 18) and, as ±1 bits,

        channel 0    c_i = [s_{i+1} + c_{i+1} >= 10]   the carry from the cell to its right
        channel 1    z_i = [s_i = 9 and c_i]          the carry wraps this cell's digit to 0

    so a cell's digit (s_i + c_i) mod 10 = (s_i mod 10) + c_i - 10 z_i is linear in its problem's
    one-hot symbol and its bits: the one-unit readout of train/coded.py reads it. Both new bits are
    thresholds of one sum over the right neighbour's symbol and carry (z_i also over the cell's own
    symbol), so the rule is linear up to the sign; the padding beyond a tape carries nothing. The
    automaton settles from any state: c_i depends only on the cells to its right, so after a step
    more than the longest run of 9s (and at most a tape's length) every bit is at its fixed point. A
    state of 0 (before the first step) counts as no carry."""

    task = "addition"
    channels = 2
    RANDOM_SHARE, ZERO_SHARE = 0.3, 0.1  # training cells with random bits, and with the zero state
    POSITIVE_WEIGHT = 3.0  # a +1 bit is the rarer one

    @staticmethod
    def _sums(x: torch.Tensor) -> torch.Tensor:
        """(B, L) int64 column sums of problems x (B, C_in, L) (0 on padding)."""
        return torch.einsum("bcl,c->bl", x[:, 1:], torch.arange(x.shape[1] - 1, dtype=x.dtype)).round().long()

    def parts(self, p: Parsed) -> tuple[np.ndarray, np.ndarray]:
        """(s, c), each (length,) int64: each cell's column sum and the carry into it."""
        a = np.frombuffer(p.a.rjust(p.length, "0").encode(), np.uint8).astype(np.int64) - 48
        b = np.frombuffer(p.b.rjust(p.length, "0").encode(), np.uint8).astype(np.int64) - 48
        s, c = a + b, np.zeros(p.length, np.int64)
        for i in range(p.length - 2, -1, -1):
            c[i] = s[i + 1] + c[i + 1] >= 10
        return s, c

    def bits(self, p: Parsed) -> np.ndarray:
        """(channels, length) float32: the fixed point's bits, each -1 or +1."""
        s, c = self.parts(p)
        return np.where(np.stack([c == 1, (s == 9) & (c == 1)]), 1.0, -1.0).astype(np.float32)

    def random_states(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """(B, 2, L): per cell a random carry coded with its z bit, or random bits (RANDOM_SHARE),
        or the zero state (ZERO_SHARE); 0 on padding."""
        b, _, n = x.shape
        c = torch.rand((b, n), generator=gen) < 0.5
        coded = torch.stack([c, c & (self._sums(x) == 9)], 1).float() * 2 - 1
        return _noisy(coded, x, gen, self.RANDOM_SHARE, self.ZERO_SHARE)

    def transition(self, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """The code's automaton, one step: problems x (B, C_in, L), a state (B, 2, L) of ±1 (0 on
        padding and before the first step) -> the next state's bits (class docstring)."""
        s = self._sums(x)
        right = lambda t: torch.cat([t[:, 1:], torch.zeros_like(t[:, :1])], 1)  # the value at i + 1, 0 past the end
        carry = right(s) + right((state[:, 0] > 0).long()) >= 10
        bits = torch.stack([carry, carry & (s == 9)], 1).float() * 2 - 1
        return bits * x[:, :1]

    def loss_weight(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(B, 2, L): each bit's weight in the transition loss (0 on padding)."""
        return torch.where(target > 0, self.POSITIVE_WEIGHT, 1.0) * x[:, :1]


class ParityFront:
    """parity, 2 channels: whether a cell knows the parity of the bits up to it, and that parity.

        k_i = [k_{i-1} or the cell has no left neighbour]   known: a front moving right
        p_i = k_i and (p_{i-1} xor b_i)                     +1 odd; -1 while unknown

    The front leaves settled cells behind: each cell changes at most twice (k, then p), so a solve
    is a tape's length in steps with about two changes a step, which tiles follow. The readout's
    class, [p_i odd], is linear in the bit. p's new bit is not a threshold of one sum (xor), so the
    rule needs its relu (TrainConfig.relu_hidden): units opened by the cell's own bit pass the left
    neighbour's p or its negation. The zero state (before the first step) is unknown. The automaton
    settles from any state in a tape's length: k from the left edge, p behind it."""

    task = "parity"
    channels = 2
    RANDOM_SHARE, ZERO_SHARE = 0.3, 0.1
    POSITIVE_WEIGHT = 1.0

    @staticmethod
    def _bits(x: torch.Tensor) -> torch.Tensor:
        return (x[:, 2] > 0).long()  # channel 1 + b: code 1 + bit

    def bits(self, p: Parsed) -> np.ndarray:
        b = np.frombuffer(p.text.encode(), np.uint8).astype(np.int64) - 48
        odd = np.cumsum(b) % 2 == 1
        return np.stack([np.ones(len(b)), np.where(odd, 1.0, -1.0)]).astype(np.float32)

    def random_states(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """A random front: cells left of a random point known with their true parity (or random
        bits, RANDOM_SHARE), cells right of it unknown; or the zero state (ZERO_SHARE); 0 on padding."""
        b, _, n = x.shape
        odd = torch.cumsum(self._bits(x), 1) % 2 == 1
        front = torch.randint(0, n + 1, (b, 1), generator=gen)
        known = torch.arange(n)[None] < front
        coded = torch.stack([known, known & odd], 1).float() * 2 - 1
        return _noisy(coded, x, gen, self.RANDOM_SHARE, self.ZERO_SHARE)

    def transition(self, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        shift = lambda t: torch.cat([torch.zeros_like(t[:, :1]), t[:, :-1]], 1)  # the value at i - 1, 0 before
        edge = shift(x[:, 0]) == 0  # no real cell to the left
        known = edge | (shift(state[:, 0]) > 0)
        odd = known & ((edge | (shift(state[:, 1]) <= 0)).logical_not() ^ (self._bits(x) == 1))
        return torch.stack([known, odd], 1).float().mul(2).sub(1) * x[:, :1]

    def loss_weight(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(target) * x[:, :1]


class SetValue:
    """rule110, 2 channels: whether a generation has set the cell's value, and that value.

        f = +1 once a step has run (0 in the zero state, before the first)
        v = the cell's value after the last generation, ±1 (0 before the first)

    A cell's value is its problem bit while f is 0 and [v > 0] after; each step writes f = +1 and
    v = Rule 110 of the three values around the cell. Every cell of a ring starts and steps
    together, so a window is all in the zero state or all set. The readout's class is linear in a
    cell's bit and v (v = 0 leaves the bit to decide; ±1 outweighs it). Rule 110 is not a threshold
    of one sum, so the rule keeps its relu (TrainConfig.relu_hidden): f opens one group of units,
    which read the neighbours' v, and closes another, which read their bits."""

    task = "rule110"
    channels = 2
    ZERO_SHARE = 0.2  # training rows in the zero state; the others set, with random values
    POSITIVE_WEIGHT = 1.0

    @staticmethod
    def _bits(x: torch.Tensor) -> torch.Tensor:
        return (x[:, 2] > 0).long()  # channel 1 + b: code 1 + bit

    def bits(self, p: Parsed) -> np.ndarray:
        """(channels, length) float32: the state after the problem's generations (0 before any)."""
        if not p.generations:
            return np.zeros((self.channels, p.length), np.float32)
        tape = np.frombuffer(p.a.encode(), np.uint8).astype(np.int64) - 48
        for _ in range(p.generations):
            tape = rule110_generation(tape)
        return np.stack([np.ones(p.length), tape * 2.0 - 1]).astype(np.float32)

    def random_states(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """(B, 2, L) for rings x (B, C_in, L) of one length: per row the zero state (ZERO_SHARE) or
        f = +1 with random values."""
        b, _, n = x.shape
        values = torch.randint(0, 2, (b, 1, n), generator=gen).float() * 2 - 1
        coded = torch.cat([torch.ones_like(values), values], 1)
        zero = torch.rand((b, 1, 1), generator=gen) < self.ZERO_SHARE
        return torch.where(zero, torch.zeros_like(coded), coded) * x[:, :1]

    def transition(self, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        value = torch.where(state[:, 0] > 0, (state[:, 1] > 0).long(), self._bits(x))
        pattern = 4 * torch.roll(value, 1, 1) + 2 * value + torch.roll(value, -1, 1)  # a ring: left, self, right
        new = (110 >> pattern) & 1
        return torch.stack([torch.ones_like(new), new], 1).float().mul(2).sub(1) * x[:, :1]

    def loss_weight(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(target) * x[:, :1]


def _noisy(coded: torch.Tensor, x: torch.Tensor, gen: torch.Generator, random_share: float,
           zero_share: float) -> torch.Tensor:
    """A tape's training state (B, C, L): per cell the coded bits, or random bits (random_share), or
    the zero state (zero_share); 0 on padding."""
    noise = torch.randint(0, 2, coded.shape, generator=gen).float() * 2 - 1
    draw = torch.rand((coded.shape[0], 1, coded.shape[2]), generator=gen)
    state = torch.where(draw < random_share, noise, coded)
    state = torch.where(draw > 1 - zero_share, torch.zeros_like(state), state)
    return state * x[:, :1]


def _shifted(t: torch.Tensor, di: int, dj: int) -> torch.Tensor:
    """(B, H, W): at (i, j) the value of t at (i + di, j + dj), 0 outside the grid."""
    out = torch.zeros_like(t)
    h, w = t.shape[1:]
    out[:, max(-di, 0) : h + min(-di, 0), max(-dj, 0) : w + min(-dj, 0)] = \
        t[:, max(di, 0) : h + min(di, 0), max(dj, 0) : w + min(dj, 0)]
    return out


def rounding_readout(model) -> None:
    """Set a one-unit readout's output layer to the decoder of a number and freeze it: logits_k =
    k (READOUT_SCALE h) - k^2 / 2, largest for the class nearest READOUT_SCALE h."""
    if model.config.readout_hidden != 1:
        raise ValueError(f"a coded state's readout has one hidden unit, not {model.config.readout_hidden}")
    k = torch.arange(model.config.classes, dtype=torch.float32)
    with torch.no_grad():
        model.read_out.weight.copy_((READOUT_SCALE * k).view(model.read_out.weight.shape))
        model.read_out.bias.copy_(-k ** 2 / 2)
    model.read_out.requires_grad_(False)


CODES = {"carry_thermometer": CarryThermometer(), "carry_in": CarryIn(), "parity_front": ParityFront(),
         "set_value": SetValue()}


def get_code(name: str):
    if name not in CODES:
        raise ValueError(f"unknown state code {name!r}; known: {sorted(CODES)}")
    return CODES[name]


def code_batch(name: str, problems: list[Parsed], shape: tuple[int, ...]) -> torch.Tensor:
    """(B, channels, *shape) float32: each problem's fixed-point bits, 0 on padding, padded as
    data.encode_batch pads the problems."""
    code = get_code(name)
    bits = np.zeros((len(problems), code.channels, *shape), np.float32)
    for i, p in enumerate(problems):
        b = code.bits(p)
        bits[(i, slice(None)) + tuple(slice(0, d) for d in b.shape[1:])] = b
    return torch.from_numpy(bits)
