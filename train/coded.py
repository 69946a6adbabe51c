"""Training a rule whose state is a fixed code (train/codes.py): the rule learns the code's automaton.

No unroll: each batch is random problems with random states (codes.random_states), and the loss
is a hinge on every bit of one step against the automaton's next state (codes.transition), with
weights the code chooses. Three moves make a rule of few hidden units exact, where a 3-unit rule
trained on the bits due by a deadline stayed short of it
(bench/results/train_multiplication_compact_deadline_seed0.json):

1. A linear hidden layer while training: the code's bits are thresholds of a few sums, so the rule
   it needs is linear up to the sign, and a linear bottleneck trains without dead units. At the
   end each hidden unit gets a bias that keeps it positive on every input (fold_relu): relu is then
   the identity there, and the shifted rule is the same function with the exported relu.
2. A wide rule first: `wide_hidden` units for `wide_share` of the steps (with one unit per state
   channel the rule is a linear classifier per bit, a convex problem), pulled towards rank `hidden`
   by a penalty on its other singular values (`nuclear_weight`), then factored to `hidden` units by
   its top singular vectors, and trained on at `narrow_lr`.
3. A polish: L-BFGS on the squared hinge over a fixed set of random states, `polish_rounds`
   times; each round adds fresh batches in which the rule still gets a bit wrong (the rare sums
   that minibatches seldom meet).
The readout is fitted by least squares on fixed points: its class is linear in a cell's problem and bits.
"""
from __future__ import annotations

import dataclasses
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from sead.runtime.tasks import get_task
from .codes import READOUT_SCALE, code_batch, get_code
from .data import encode_batch, sample_lines
from .model import SEAD

POLISH_BATCHES = 48  # batches of random states in the polish's first set, and drawn fresh each round
POLISH_ITERATIONS = 100  # L-BFGS iterations per polish round
POLISH_MAX_BATCHES = 128  # the polish set's cap: a rule far from exact stops growing it (the shipped seeds' reach 87)


def random_problems(cfg, rng: np.random.Generator) -> torch.Tensor:
    """(B, C_in, *S): a batch of cfg.batch_size random training problems, encoded."""
    task = get_task(cfg.task)
    length = int(rng.integers(1, cfg.max_len + 1)) if task.boundary == "ring" else None  # rings are never padded
    lines = sample_lines(cfg.task, rng, cfg.batch_size, cfg.max_len, length=length)
    return encode_batch(cfg.task, [task.parse(line) for line in lines])[0]


def transition_loss(model: SEAD, code, x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, float]:
    """-> (hinge loss, share of bits wrong) of one step from random states, against the code's automaton."""
    state = code.random_states(x, gen)
    target = code.transition(x, state)
    pre = model.preactivation(x, state)
    weight = code.loss_weight(x, target)
    loss = (F.relu(1.0 - pre * target) * weight).sum() / weight.sum()
    wrong = ((pre * target <= 0) & (weight > 0)).sum() / (weight > 0).sum()
    return loss, float(wrong)


def rank_penalty(model: SEAD, rank: int) -> torch.Tensor:
    """The singular values of the linear rule (rule_out . rule_in) past the first `rank`, summed,
    relative to the largest."""
    values = torch.linalg.svdvals(model.rule_out.weight.flatten(1) @ model.rule_in.weight.flatten(1))
    return values[rank:].sum() / values[0].detach()


def polish(model: SEAD, code, cfg, rng: np.random.Generator, gen: torch.Generator, log: bool) -> list[dict]:
    """cfg.polish_rounds rounds of L-BFGS (squared hinge, full batch) over random states of
    POLISH_BATCHES batches, each round adding the fresh batches that still hold a wrong bit (up to
    POLISH_MAX_BATCHES in all)."""
    params = [model.rule_in.weight, model.rule_in.bias, model.rule_out.weight, model.rule_out.bias]

    def batch():
        x = random_problems(cfg, rng)
        state = code.random_states(x, gen)
        target = code.transition(x, state)
        return x, state, target, code.loss_weight(x, target)

    def wrong(data) -> list[int]:
        with torch.no_grad():
            return [int(((model.preactivation(x, s) * t <= 0) & (w > 0)).sum()) for x, s, t, w in data]

    data, history = [batch() for _ in range(POLISH_BATCHES)], []
    for round_ in range(cfg.polish_rounds):
        lbfgs = torch.optim.LBFGS(params, lr=1.0, max_iter=POLISH_ITERATIONS, history_size=50, line_search_fn="strong_wolfe")
        total = sum(float(w.sum()) for *_, w in data)

        def closure():
            lbfgs.zero_grad()
            loss = 0.0
            for x, s, t, w in data:
                part = (F.relu(1.0 - model.preactivation(x, s) * t) ** 2 * w).sum() / total
                part.backward()
                loss += float(part.detach())
            return torch.tensor(loss)

        lbfgs.step(closure)
        fresh = [batch() for _ in range(POLISH_BATCHES)]
        misses = wrong(fresh)
        history.append({"polish_round": round_ + 1, "batches": len(data), "bits_wrong_in_set": sum(wrong(data)),
                        "fresh_bits_wrong": sum(misses)})
        if log:
            print(f"polish round {round_ + 1}: {history[-1]}", file=sys.stderr, flush=True)
        data += [b for b, m in zip(fresh, misses) if m][: max(0, POLISH_MAX_BATCHES - len(data))]
    return history


def factor(wide: SEAD, narrow: SEAD) -> None:
    """Set narrow's rule to the best rank-`narrow.hidden` approximation of wide's linear rule
    (rule_out . rule_in), by its singular vectors, split evenly between the two layers."""
    with torch.no_grad():
        w1, w2 = wide.rule_in.weight.flatten(1), wide.rule_out.weight.flatten(1)
        u, s, vt = torch.linalg.svd(w2 @ w1, full_matrices=False)
        r = narrow.config.hidden
        narrow.rule_in.weight.copy_((s[:r, None].sqrt() * vt[:r]).view_as(narrow.rule_in.weight))
        narrow.rule_in.bias.zero_()
        narrow.rule_out.weight.copy_((u[:, :r] * s[:r].sqrt()).view_as(narrow.rule_out.weight))
        narrow.rule_out.bias.copy_(w2 @ wide.rule_in.bias + wide.rule_out.bias)


def fold_relu(model: SEAD) -> None:
    """Give each hidden unit a bias that keeps it >= 1 on every input (a one-hot problem symbol with
    its mask at each tap, each state value in -1..1, padding 0), take the shift back out of rule_out's
    bias, and switch relu back on: the same function wherever relu is the identity, which is everywhere."""
    with torch.no_grad():
        w, c = model.rule_in.weight, model.config.input_channels
        mask, symbols, state = w[:, :1], w[:, 1:c], w[:, c:]
        taps = tuple(range(1, w.dim()))  # the input channels and the kernel's 3 or 3 x 3 taps
        lowest = ((mask + symbols.amin(1, keepdim=True)).clamp(max=0).sum(taps)
                  - state.abs().sum(taps) + model.rule_in.bias)
        shift = (1.0 - lowest).clamp(min=0)
        model.rule_in.bias += shift
        model.rule_out.bias -= model.rule_out.weight.flatten(1) @ shift
    model.linear_hidden = False


def fit_readout(model: SEAD, code_name: str, task_name: str, rng: np.random.Generator, count: int, max_len: int) -> float:
    """Least squares of the readout's one hidden unit on `count` problems' fixed points (class /
    READOUT_SCALE from [problem; bits]); -> the largest residual, in classes."""
    task = get_task(task_name)
    parsed = [task.parse(line) for line in sample_lines(task_name, rng, count, max_len)]
    x, y, _ = encode_batch(task_name, parsed)
    bits = code_batch(code_name, parsed, tuple(y.shape[1:]))
    read = y >= 0
    z = torch.cat([x, bits], 1).movedim(1, -1)[read].double()
    a = torch.cat([z, torch.ones(len(z), 1, dtype=torch.float64)], 1)
    target = y[read].double() / READOUT_SCALE
    solution = torch.linalg.lstsq(a, target[:, None], driver="gelsd").solution[:, 0]
    with torch.no_grad():
        model.read_in.weight.copy_(solution[:-1].float().view_as(model.read_in.weight))
        model.read_in.bias.copy_(solution[-1:].float())
    return float((a @ solution - target).abs().max() * READOUT_SCALE)


def train_coded(cfg, build_model, log=True) -> tuple[SEAD, dict]:
    """A coded rule from scratch (cfg: loop.TrainConfig with a code): the wide phase, the factored
    phase, fold_relu, fit_readout. -> (model, record), as loop.train."""
    from .loop import Progress  # the loop's progress bar
    start = time.time()
    torch.manual_seed(cfg.seed)
    rng, gen = np.random.default_rng(cfg.seed), torch.Generator().manual_seed(cfg.seed)
    code = get_code(cfg.code)
    narrow = build_model(cfg)
    wide_steps = int(cfg.wide_share * cfg.steps) if cfg.wide_hidden else 0
    wide = build_model(dataclasses.replace(cfg, hidden=cfg.wide_hidden)) if wide_steps else None
    history, step, progress = [], 0, Progress(cfg.steps, f"train {cfg.code}") if log else None
    phases = [(wide, wide_steps, cfg.lr), (narrow, cfg.steps - wide_steps, cfg.narrow_lr or cfg.lr)] if wide \
        else [(narrow, cfg.steps, cfg.lr)]
    for model, steps, lr in phases:
        model.linear_hidden = not cfg.relu_hidden
        if model is narrow and wide:
            factor(wide, narrow)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
        for _ in range(steps):
            step += 1
            loss, wrong = transition_loss(model, code, random_problems(cfg, rng), gen)
            if model is wide and cfg.nuclear_weight:  # ramped in over the first half of the wide phase
                loss = loss + cfg.nuclear_weight * min(1.0, 2 * step / wide_steps) * rank_penalty(model, cfg.hidden)
            loss_value = float(loss.detach())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if step % 500 == 0 or step == cfg.steps:
                history.append({"step": step, "hidden": model.config.hidden, "loss": round(loss_value, 5),
                                "bits_wrong": round(wrong, 6)})
            if progress:
                progress.update(step, loss=loss_value, bits_wrong=wrong)
            if (time.time() - start) / 60 > cfg.max_minutes:
                break
    if progress:
        progress.close()
    model = narrow
    history += polish(model, code, cfg, rng, gen, log)
    if not cfg.relu_hidden:
        fold_relu(model)
    residual = fit_readout(model, cfg.code, cfg.task, rng, 2048, cfg.max_len)
    model.eval()
    return model, {"train_config": dataclasses.asdict(cfg), "steps_done": step, "seconds": round(time.time() - start, 1),
                   "max_train_cells": cfg.max_len, "history": history, "readout_residual": residual,
                   "parameters": model.num_parameters()}
