"""The training loop: backpropagation through the unrolled rule on tapes of at most 16 cells.

Losses, all on short tapes:
- answer: cross-entropy of each cell's readout at every step from the step it is due (the task's
  due_steps: on a tape, length + 1 at every cell, enough for information to cross the tape) to
  the end of the unroll;
- settle: once a cell is due, the next step must reproduce its state with a margin (a hinge on
  pre-activation * state), so the solve ends at an exact fixed point;
- activity (optional): after step 1 a cell should change at most once (a front passing by), so a
  solve's cost can follow the cells that change, not cells x steps. Every step before a cell's
  last change in the unroll is asked, with the settle margin, to keep that cell's state;
- mining: wrong short problems found by the exact oracle are kept in a pool and mixed into every
  batch (errors are local: covering rare neighbourhoods is what makes long tapes exact).
"""
from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sead.runtime.tasks import Parsed, get_task
from .coded import train_coded
from .codes import get_code, rounding_readout
from .data import MAX_TRAIN_CELLS, due_batch, encode_batch, sample_lines
from .model import SEAD, ModelConfig, solve

TRAIN_CONFIG_VERSION = 1
ANNEAL_SEED_OFFSET = 100  # the anneal phase's seed: cfg.seed + this


@dataclass(frozen=True)
class TrainConfig:
    task: str
    seed: int = 0
    steps: int = 3000
    batch_size: int = 128
    lr: float = 3e-3
    max_len: int = MAX_TRAIN_CELLS
    extra_steps: int = 6  # unroll this many steps past the due step
    settle_weight: float = 1.0
    settle_from: float = 0.0  # fraction of steps before the settle hinge is switched on
    margin: float = 1.0
    # the activity hinge ramps linearly from 0 at activity_from to its weight at activity_full
    activity_weight: float = 0.0
    activity_from: float = 0.3
    activity_full: float = 0.5
    mine_every: int = 250
    mine_count: int = 4096
    pool_share: float = 0.25
    # the last part of training hunts rare neighbourhoods: more mining, more of the pool per batch
    hunt_from: float = 1.0  # fraction of steps after which hunting starts (1.0: never)
    hunt_every: int = 100
    hunt_count: int = 16384
    hunt_share: float = 0.5
    max_minutes: float = 15.0
    state_channels: int = 8
    hidden: int = 32
    readout_hidden: int = 32
    state: str = "sign"  # the model's state code (train/model.py); "symbol" has one channel per class
    deadline_weight: float = 0.0  # symbol states: the weight of deadline_loss (0: left out)
    # symbol states: the fraction of steps trained on deadline_loss alone (one step per batch, no
    # unroll: about ten times cheaper) before the unrolled losses start
    unroll_from: float = 0.0
    read_digits: int = 0  # symbol states: the rule reads a class by its digits in this base (train/model.py)
    # sign states: a fixed code of each cell's state (train/codes.py), whose channels the state has;
    # the rule learns the code's automaton (train/coded.py: no unroll, no mining), first `wide_hidden`
    # units wide for `wide_share` of the steps (pulled towards rank `hidden` by nuclear_weight), then
    # factored to `hidden` units and trained at narrow_lr, then polished by L-BFGS (polish_rounds)
    code: str = ""
    wide_hidden: int = 0
    wide_share: float = 0.25
    nuclear_weight: float = 0.0
    narrow_lr: float = 0.0
    polish_rounds: int = 0
    # keep the hidden layer's relu while training a coded rule (no fold): a code whose new bits are
    # not thresholds of sums (parity's XOR) needs the relu to gate its units by the cell's symbol
    relu_hidden: bool = False
    # a second phase after `steps`: the same losses for anneal_steps more, on a fresh one-cycle schedule
    # peaking at anneal_lr, a fresh pool and seed + ANNEAL_SEED_OFFSET (0: no second phase)
    anneal_steps: int = 0
    anneal_lr: float = 0.0
    version: int = TRAIN_CONFIG_VERSION


def build_model(cfg: TrainConfig) -> SEAD:
    task = get_task(cfg.task)
    if (cfg.deadline_weight or cfg.unroll_from) and cfg.state != "symbol":
        raise ValueError("deadline_weight and unroll_from need state='symbol': only a symbol state has a known "
                         "answer state")
    if cfg.read_digits and cfg.state != "symbol":
        raise ValueError("read_digits needs state='symbol': digits are read from a class")
    if cfg.code and (cfg.state != "sign" or get_code(cfg.code).task != task.name):
        raise ValueError(f"code {cfg.code!r} is a sign state's code for task {get_code(cfg.code).task!r}")
    channels = task.classes if cfg.state == "symbol" else get_code(cfg.code).channels if cfg.code else cfg.state_channels
    model = SEAD(ModelConfig(task=task.name, input_channels=task.input_channels, classes=task.classes,
                             boundary=task.boundary, state_channels=channels, hidden=cfg.hidden,
                             readout_hidden=cfg.readout_hidden, rank=task.rank, state=cfg.state,
                             read_digits=cfg.read_digits))
    if cfg.code:
        rounding_readout(model)
    return model


def ramp(cfg: TrainConfig, step: int) -> float:
    """The activity weight at an optimizer step: 0 before activity_from, full from activity_full."""
    frac = step / cfg.steps
    if cfg.activity_weight == 0 or frac <= cfg.activity_from:
        return 0.0
    span = max(cfg.activity_full - cfg.activity_from, 1e-9)
    return cfg.activity_weight * min(1.0, (frac - cfg.activity_from) / span)


def fixed_point_loss(model: SEAD, x, y, due, cfg: TrainConfig, extra: int):
    """Unroll; answer loss and settle loss from each cell's due step on, and the activity hinge.

    due: (B, *S) int64, each cell's due step (data.due_batch). -> (answer, settle, activity,
    correct (B,) bool). Activity: step 1 sets every cell from 0; after it, each step before a
    cell's last change in the unroll gets the hinge
    relu(margin - pre * state) on that cell, so the change that stays is free and changes that are
    undone or overwritten later cost. Averaged over real cells, state channels and steps; 0.0 when
    cfg.activity_weight is 0. A hinge on keeping, not a straight-through count of flips: the count
    leaves most seeds with many changes per cell."""
    mask = x[:, :1]
    due = due.unsqueeze(1)  # (B, 1, *S): the step each cell's readout is due (the task's due_steps)
    horizon = int(due.max()) + extra
    state = model.initial_state(x)
    answer, settle, count = 0.0, 0.0, 0
    keeps, moves = [], []  # per step from t = 2: the keep-hinge (B, C_s, L) and cells that changed (B, 1, L)
    correct = torch.ones(x.shape[0], dtype=torch.bool)
    for t in range(1, horizon + 1):
        pre = model.preactivation(x, state)
        if t > 1:
            keep = model.code.keep_hinge(pre, state, cfg.margin) * mask  # > 0 unless this step keeps state_{t-1}
            # the step that produces state_t must leave a cell's state_{t-1} unchanged once it is due
            late = (t - 1 >= due).float()
            settle = settle + (keep * late).sum() / ((late * mask).sum() * keep.shape[1] + 1)
        new = model.code.activate(pre) * mask
        if t > 1 and cfg.activity_weight:
            keeps.append(keep)
            moves.append((new != state).any(1, keepdim=True))
        state = new
        ready = (t >= due[:, 0]) & (y >= 0)
        if bool(ready.any()):
            logits = model.answer_logits(x, state, pre)
            tgt = torch.where(ready, y, torch.full_like(y, -1))
            answer = answer + F.cross_entropy(logits, tgt, ignore_index=-1)
            count += 1
            if t == horizon:
                pred = logits.argmax(1)
                ok = (pred == y) | (y < 0)
                correct = ok.flatten(1).all(1)
    activity, later = 0.0, torch.zeros_like(mask, dtype=torch.bool)
    for keep, move in zip(reversed(keeps), reversed(moves)):  # later: the cell changes after this step
        activity = activity + (keep * later).sum()
        later = later | move
    activity = activity / (mask.sum() * (keeps[0].shape[1] if keeps else 1) * horizon)
    return answer / max(count, 1), settle / horizon, activity, correct


def deadline_loss(model: SEAD, x, y, due, gen: torch.Generator, disturb: float = 0.3):
    """Symbol states: every cell meets its deadline whatever the cells not yet due hold.

    For a random step t of each problem, the cells due by t hold their answers (as states) and
    every other cell holds noise: all zero at t = 0 (the state before the first step), a random
    class after. One step later, every cell due by t + 1 must read its answer. Judged are the cells
    whose own state is noise (the ones due at t + 1, and a share `disturb` of the due ones, given
    noise too, so no cell learns to copy its own state), and, as a second mean, the due ones that
    hold their answers: they must keep them while their neighbours churn (without this mean, a
    cell that met its deadline may change later, a common failure on long products). A judged cell has no disturbed neighbour, so its answer follows from what it
    sees. A rule that does this for every noise solves from the zero state by each cell's due step
    (by induction on t). One step, no unroll: it uses the answers and the due steps only, never a
    solve's intermediate states."""
    b = y.shape[0]
    last = due.flatten(1).amax(1)  # each problem's last due step (padding is 0)
    t = (torch.rand(b, generator=gen) * last).long().view(-1, *[1] * (y.dim() - 1))  # 0 .. last - 1
    answer = F.one_hot(y.clamp(min=0), model.config.classes).movedim(-1, 1).float()
    noise = model.code.random(tuple(answer.shape), gen) * (t > 0).unsqueeze(1)
    done = due <= t
    disturbed = done & (torch.rand(tuple(y.shape), generator=gen) < disturb)
    kept = (done & ~disturbed).unsqueeze(1)
    state = torch.where(kept, answer, noise) * x[:, :1]
    window = {1: F.avg_pool1d, 2: F.avg_pool2d}[model.config.rank]  # the mean over a cell's 3 or 3x3 cells
    around = window(disturbed.unsqueeze(1).float(), 3, stride=1, padding=1)[:, 0] * 3 ** model.config.rank
    quiet = around - disturbed.float() < 0.5  # no disturbed neighbour (the cell itself may be)
    judged = (due <= t + 1) & quiet & (y >= 0)
    pre = model.preactivation(x, state)
    loss = pre.sum() * 0.0  # cross_entropy over no cell is NaN
    for cells in (judged & ~kept[:, 0], judged & kept[:, 0]):
        if bool(cells.any()):
            loss = loss + F.cross_entropy(pre, torch.where(cells, y, torch.full_like(y, -1)), ignore_index=-1)
    return loss


def generations_loss(model: SEAD, x, problems: list[Parsed], horizon: int):
    """Tasks that run a given number of steps: the readout after t steps must be generation t
    (the task's generation_targets), for every t up to the horizon. problems: one shape (rings
    are never padded). -> (answer loss, correct (B,) bool: right at every t)."""
    task = get_task(model.config.task)
    targets = torch.from_numpy(np.stack([task.generation_targets(p, horizon) for p in problems], 1))  # (T+1, B, *S)
    state = model.initial_state(x)
    answer = 0.0
    correct = torch.ones(x.shape[0], dtype=torch.bool)
    for t in range(horizon + 1):
        if t > 0:
            state = model.step(x, state)
        logits = model.readout(x, state)
        answer = answer + F.cross_entropy(logits, targets[t])
        correct &= (logits.argmax(1) == targets[t]).flatten(1).all(1)
    return answer / (horizon + 1), correct


def mine(model: SEAD, cfg: TrainConfig, rng: np.random.Generator, count: int,
         recheck: list[str] = ()) -> tuple[list[str], list[str], float]:
    """Solve `count` fresh random short problems exactly, and re-check the pool.

    -> (fresh wrong ones, pool problems still wrong, accuracy on the fresh ones)."""
    task = get_task(cfg.task)
    per_batch = max(1, min(512, count))
    batches = max(1, count // per_batch)
    fresh_wrong = []
    for _ in range(batches):
        length = int(rng.integers(1, cfg.max_len + 1)) if task.convergence == "generations" else None
        fresh_wrong += _wrong(model, task, sample_lines(cfg.task, rng, per_batch, cfg.max_len, length=length))
    still_wrong = []
    for start in range(0, len(recheck), per_batch):
        still_wrong += _wrong(model, task, list(recheck[start:start + per_batch]))
    return fresh_wrong, still_wrong, 1.0 - len(fresh_wrong) / (batches * per_batch)


def _wrong(model: SEAD, task, lines: list[str]) -> list[str]:
    wrong = []
    if lines:
        parsed = [task.parse(line) for line in lines]
        x, _, gens = encode_batch(task.name, parsed)
        cap = max(task.step_cap(p) for p in parsed)
        symbols, _, converged = solve(model, x, max_steps=cap, generations=gens)
        for i, p in enumerate(parsed):
            if not converged[i] or task.decode(symbols[i].numpy(), p) != task.answer(p):
                wrong.append(lines[i])
    return wrong


class Progress:
    """Training progress on stderr with tqdm: redrawn in place on a terminal; elsewhere (a log
    file) one line at most every 10 seconds."""

    def __init__(self, total: int, label: str):
        from tqdm import tqdm

        tty = sys.stderr.isatty()
        self.bar = tqdm(total=total, desc=label, file=sys.stderr, dynamic_ncols=tty, ncols=None if tty else 120,
                        mininterval=0.1 if tty else 10.0, unit="step")

    def update(self, done: int, **fields) -> None:
        self.bar.set_postfix({k: round(v, 4) if isinstance(v, float) else v for k, v in fields.items()}, refresh=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def train(cfg: TrainConfig, log=True, first_phase: tuple[SEAD, dict] | None = None) -> tuple[SEAD, dict]:
    """Train a model from scratch; deterministic for a given cfg.seed (and torch thread count).
    -> (model, record).

    Two phases when cfg.anneal_steps: `steps` at peak lr, then anneal_steps at peak anneal_lr.
    first_phase: (model, record) that a run of this cfg without its anneal phase made (a checkpoint
    bench/seeds.py --save kept): only the anneal phase runs, on that model; the result is the one
    a run from scratch gives, since the anneal phase starts from the weights alone."""
    if cfg.code:
        if first_phase is not None or cfg.anneal_steps:
            raise ValueError("a coded rule trains in one run (train/coded.py): no first-phase checkpoint, no anneal phase")
        return train_coded(cfg, build_model, log)
    start = time.time()
    if first_phase is None:
        torch.manual_seed(cfg.seed)
        model, record = _phase(build_model(cfg), cfg, log, start)
    else:
        model, record = first_phase
        _check_first_phase(cfg, record)
        record = {**record, "first_phase_from": "a checkpoint of the first phase"}
    if cfg.anneal_steps:
        annealing = dataclasses.replace(cfg, seed=cfg.seed + ANNEAL_SEED_OFFSET, steps=cfg.anneal_steps, lr=cfg.anneal_lr)
        torch.manual_seed(annealing.seed)
        model, second = _phase(model, annealing, log, start if first_phase is None else time.time(),
                               label=f"anneal {cfg.task}")
        done = record["steps_done"]
        record["history"] = record["history"] + [{**h, "step": done + h["step"], "phase": "anneal"}
                                                 for h in second["history"]]
        record["steps_done"] = done + second["steps_done"]
        record["seconds"] = round(record["seconds"] + second["seconds"], 1)
    record["train_config"] = dataclasses.asdict(cfg)
    return model, record


def _check_first_phase(cfg: TrainConfig, record: dict) -> None:
    """The checkpoint must come from this recipe's whole first phase: every setting equal but the
    anneal's and the time limit, and every step run."""
    made = record["train_config"]
    loose = ("anneal_steps", "anneal_lr", "max_minutes")
    want = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in loose}
    got = {k: v for k, v in made.items() if k not in loose}
    if got != want:
        diff = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
        raise ValueError(f"the first-phase checkpoint was trained with other settings ({', '.join(diff)})")
    if made.get("anneal_steps"):
        raise ValueError("the first-phase checkpoint has already been through an anneal phase")
    if record["steps_done"] != cfg.steps:
        raise ValueError(f"the first-phase checkpoint stopped at its time limit after {record['steps_done']} "
                         f"of {cfg.steps} steps")


def _phase(model: SEAD, cfg: TrainConfig, log: bool, start: float, label: str | None = None) -> tuple[SEAD, dict]:
    """cfg.steps optimizer steps on `model` (one-cycle schedule peaking at cfg.lr, a fresh pool, RNGs
    from cfg.seed), stopping early once cfg.max_minutes have passed since `start`."""
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    task = get_task(cfg.task)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.05)
    pool: list[str] = []
    progress = Progress(cfg.steps, label or f"train {cfg.task}") if log else None
    history, short_acc, begun = [], float("nan"), time.time()
    step = 0
    for step in range(1, cfg.steps + 1):
        model.train()
        length = int(rng.integers(1, cfg.max_len + 1)) if task.convergence == "generations" else None
        hunting = step > cfg.hunt_from * cfg.steps
        share = cfg.hunt_share if hunting else cfg.pool_share
        n_pool = int(cfg.batch_size * share) if pool and length is None else 0
        lines = sample_lines(cfg.task, rng, cfg.batch_size - n_pool, cfg.max_len, length=length)
        lines += [pool[i] for i in rng.integers(0, len(pool), n_pool)] if n_pool else []
        parsed = [task.parse(line) for line in lines]
        x, y, _ = encode_batch(cfg.task, parsed)
        extra = int(rng.integers(2, cfg.extra_steps + 1))
        if task.convergence == "generations":
            loss, correct = generations_loss(model, x, parsed, horizon=extra)
        else:
            due = due_batch(cfg.task, parsed, tuple(y.shape[1:]))
            if step <= cfg.unroll_from * cfg.steps:  # the deadline phase: one step per batch, no unroll
                loss, correct = deadline_loss(model, x, y, due, gen), torch.zeros(len(parsed), dtype=torch.bool)
            else:
                answer, settle, activity, correct = fixed_point_loss(model, x, y, due, cfg, extra)
                loss = answer + (cfg.settle_weight * settle if step > cfg.settle_from * cfg.steps else 0.0)
                if cfg.deadline_weight:
                    loss = loss + cfg.deadline_weight * deadline_loss(model, x, y, due, gen)
                loss = loss + ramp(cfg, step) * activity
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        every, count = (cfg.hunt_every, cfg.hunt_count) if hunting else (cfg.mine_every, cfg.mine_count)
        if step % every == 0 or step == cfg.steps:
            model.eval()
            fresh, still, short_acc = mine(model, cfg, rng, count, pool if hunting else ())
            if task.convergence != "generations":
                # while hunting, solved problems leave the pool so it holds what is still wrong
                pool = ((still if hunting else pool) + fresh)[-cfg.mine_count:]
            history.append({"step": step, "loss": round(float(loss.detach()), 5), "short_accuracy": short_acc,
                            "pool": len(pool)})
        if progress:
            progress.update(step, loss=float(loss.detach()), batch_acc=float(correct.float().mean()), short_acc=short_acc,
                            pool=len(pool))
        if (time.time() - start) / 60 > cfg.max_minutes:
            break
    if progress:
        progress.close()
    model.eval()
    record = {
        "train_config": dataclasses.asdict(cfg),
        "steps_done": step,
        "seconds": round(time.time() - begun, 1),
        "max_train_cells": cfg.max_len,
        "history": history,
        "parameters": model.num_parameters(),
    }
    return model, record
