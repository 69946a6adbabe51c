#!/usr/bin/env python3
"""How far a multiplication rule in the carry code (train/codes.py) is from *provably* being the
code's automaton: per output bit, the worst margin of pre-activation x target over every
neighbourhood of ±1 states, bounded tap by tap (each tap's share of the rule's linear map, at its
least and most, given the values the automaton reads there; the five taps it does not read, and
every channel it does not read, anything). A rule with every worst margin > 0 equals the automaton
on every state and so is exact at every size; a hand-made rule of 3 units (tests/test_coded.py)
has worst margin 1 on every bit. Writes bench/results/multiplication_compact_bound.json.

    python bench/compact_bound.py runs/compact_seed0.pt runs/compact_seed1.pt runs/compact_seed2.pt
"""
import json
import sys
from pathlib import Path

import torch

from sead.runtime.tasks.multiplication import PRODUCTS
from sead.train.checkpoint import load_checkpoint

CIN = 39
S, KD, KR = list(range(39, 48)), [48, 49], [50, 51]
OWN, UP, UR, LEFT = (1, 1), (0, 1), (0, 2), (1, 0)
FREE = [(0, 0), (1, 2), (2, 0), (2, 1), (2, 2)]
PV = torch.tensor(list(PRODUCTS) + [0])
SHAPE = (38, 1 + 38 * 3, 11, 4, 3, 3)  # own symbol, up (padding or symbol x k), up-right s (or padding), left k (or padding), own k down, own k right


def group(w, count):
    """w (O, G) -> least and most of sum(w * bits) with `count` of the bits +1, each (O,)."""
    ordered, total = torch.sort(w, dim=1).values, w.sum(1)
    return -total + 2 * ordered[:, :count].sum(1), -total + 2 * ordered[:, w.shape[1] - count:].sum(1)


def targets():
    up_p = torch.zeros(SHAPE[1], dtype=torch.long)
    up_k = torch.zeros_like(up_p)
    for sy in range(38):
        for kd in range(3):
            up_p[1 + sy * 3 + kd], up_k[1 + sy * 3 + kd] = PV[sy] // 10, kd
    ur_s, le_k = torch.arange(-1, 10).clamp(min=0), torch.tensor([0, 0, 1, 2])
    v = (PV % 10)[:, None, None, None] + (up_p + up_k)[None, :, None, None] + ur_s[None, None, :, None] + le_k[None, None, None, :]
    k = (v >= 10).long() + (v >= 20).long()
    margin = (torch.arange(38) == 37)[:, None, None, None]
    own_k = torch.arange(3)[:, None] + torch.arange(3)[None, :]
    bits = [(v[..., None, None] - 10 * own_k).clamp(0, 9) >= m for m in range(1, 10)]
    bits += [(torch.where(margin, 0, k) >= m)[..., None, None].expand(SHAPE) for m in (1, 2)]
    bits += [(torch.where(margin, k, 0) >= m)[..., None, None].expand(SHAPE) for m in (1, 2)]
    valid = torch.ones(SHAPE, dtype=torch.bool)
    valid[:, 1 + 37 * 3:] = False  # the row above is never the margin row
    valid[37, 0] = False  # the margin row always has a row above
    return torch.stack(bits).double() * 2 - 1, valid


def worst_margins(model) -> list[float]:
    w1, w2 = model.rule_in.weight.detach().double(), model.rule_out.weight.detach().double()[:, :, 0, 0]
    m = torch.einsum("oh,hcab->ocab", w2, w1)  # the rule is linear on every input (train/coded.py fold_relu)
    c = w2 @ model.rule_in.bias.detach().double() + model.rule_out.bias.detach().double()
    o = m.shape[0]
    zero = torch.zeros(o, 1, dtype=m.dtype)
    sym = lambda t: m[:, 0, t[0], t[1]][:, None] + m[:, 1:CIN, t[0], t[1]]
    absum = lambda t, ch: m[:, ch, t[0], t[1]].abs().sum(1)
    lo_kd, hi_kd = (torch.stack(v, 1) for v in zip(*[group(m[:, KD, 1, 1], n) for n in range(3)]))
    lo_kr, hi_kr = (torch.stack(v, 1) for v in zip(*[group(m[:, KR, 1, 1], n) for n in range(3)]))
    sw, f = sym(OWN), absum(OWN, S)
    own = (sw[:, :, None, None] - f[:, None, None, None] + lo_kd[:, None, :, None] + lo_kr[:, None, None, :],
           sw[:, :, None, None] + f[:, None, None, None] + hi_kd[:, None, :, None] + hi_kr[:, None, None, :])
    sw, f = sym(UP), absum(UP, S + KR)
    g_lo, g_hi = (torch.stack(v, 1) for v in zip(*[group(m[:, KD, 0, 1], n) for n in range(3)]))
    up = (torch.cat([zero, (sw[:, :, None] - f[:, None, None] + g_lo[:, None, :]).reshape(o, -1)], 1),
          torch.cat([zero, (sw[:, :, None] + f[:, None, None] + g_hi[:, None, :]).reshape(o, -1)], 1))
    sw, f = sym(UR)[:, :37], absum(UR, KD + KR)
    g = [group(m[:, S, 0, 2], n) for n in range(10)]
    ur = (torch.cat([zero, torch.stack([sw.amin(1) - f + lo for lo, _ in g], 1)], 1),
          torch.cat([zero, torch.stack([sw.amax(1) + f + hi for _, hi in g], 1)], 1))
    sw, f = sym(LEFT), absum(LEFT, S + KD)
    g = [group(m[:, KR, 1, 0], n) for n in range(3)]
    left = (torch.cat([zero, torch.stack([sw.amin(1) - f + lo for lo, _ in g], 1)], 1),
            torch.cat([zero, torch.stack([sw.amax(1) + f + hi for _, hi in g], 1)], 1))
    rest = S + KD + KR
    free = (sum(torch.clamp(sym(t).amin(1) - absum(t, rest), max=0) for t in FREE),
            sum(torch.clamp(sym(t).amax(1) + absum(t, rest), min=0) for t in FREE))
    bound = [own[i][:, :, None, None, None] + up[i][:, None, :, None, None, None, None]
             + ur[i][:, None, None, :, None, None, None] + left[i][:, None, None, None, :, None, None]
             + (free[i] + c)[:, None, None, None, None, None, None] for i in (0, 1)]
    target, valid = targets()
    worst = torch.where(target > 0, bound[0], -bound[1])
    return [round(float(worst[k][valid].min()), 3) for k in range(o)], [int((worst[k][valid] <= 0).sum()) for k in range(o)]


if __name__ == "__main__":
    rows = []
    for path in sys.argv[1:]:
        worst, unproven = worst_margins(load_checkpoint(path)[0])
        rows.append({"checkpoint": path, "worst_margin_per_bit": worst, "neighbourhood_kinds_unproven_per_bit": unproven})
        print(json.dumps(rows[-1]), flush=True)
    out = Path("bench/results/multiplication_compact_bound.json")
    out.write_text(json.dumps({"command": "python bench/compact_bound.py " + " ".join(sys.argv[1:]),
                               "neighbourhood_kinds_per_bit": int(targets()[1].sum()), "rows": rows}, indent=1) + "\n")
    print(f"wrote {out}")
