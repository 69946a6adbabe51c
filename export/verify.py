"""Prove an exported step equal to the PyTorch step before `sead export` returns.

Compared on random states and on real problem states at several lengths (1 to 100,000 cells),
then in a short full solve both ways: the PyTorch reference loop against the plain ONNX Runtime
loop (runtime/bench.py), so the check depends on neither the runtime's solver nor its engines.
The state is discrete, so it must match exactly; a value may differ only where the PyTorch
decision is within float rounding of a tie (a sign's pre-activation near zero, a symbol's two
largest pre-activations). Logits must agree to LOGIT_TOL.
"""
from __future__ import annotations

import numpy as np
import torch

from sead.runtime.bench import cpu_session, plain_ort_solve
from sead.runtime.errors import ExportMismatch
from sead.runtime.tasks import get_task
from sead.runtime.tasks.base import default_step_cap
from sead.train.data import encode_problems
from sead.train.model import SEAD, solve

LOGIT_TOL = 1e-4
ROUNDING = 1e-5  # a decision margin (|pre|; a symbol's top-two gap) below this may round either way
LENGTHS = (1, 2, 16, 100, 1000, 100_000)


def _problems(task_name: str, length: int, count: int, rng: np.random.Generator):
    task = get_task(task_name)
    lines = [task.random_line(rng, task.size_for(length), generations=int(rng.integers(0, 8))) for _ in range(count)]
    parsed = [task.parse(line) for line in lines]
    return encode_problems(task_name, parsed)


def compare_step(model: SEAD, session, x: torch.Tensor, state: torch.Tensor, what: str) -> dict:
    with torch.no_grad():
        pre = model.preactivation(x, state)
        want_state = model.step(x, state)
        want_logits = model.readout(x, state)
    got_state, got_logits = session.run(["next_state", "logits"], {"problem": x.numpy(), "state": state.numpy()})
    for name, values in (("pre-activation", pre.numpy()), ("logits", want_logits.numpy()), ("ONNX logits", got_logits)):
        if not np.isfinite(values).all():  # NaN compares unequal to everything, so it never passes
            raise ExportMismatch(f"{what}: the {name} hold {int((~np.isfinite(values)).sum())} NaN or infinite values")
    differ = got_state != want_state.numpy()
    margin = model.code.decision_margin(pre).numpy()
    real = differ & ~(margin <= ROUNDING)  # written so that a NaN margin counts as real
    if real.any():
        raise ExportMismatch(f"{what}: next_state differs in {int(real.sum())} of {differ.size} values "
                             f"(largest decision margin there {float(margin[real].max()):.3g})")
    logit_err = float(np.abs(got_logits - want_logits.numpy()).max())
    if not logit_err <= LOGIT_TOL:  # NaN fails this test, unlike `logit_err > LOGIT_TOL`
        raise ExportMismatch(f"{what}: logits differ by up to {logit_err:.3g} (tolerance {LOGIT_TOL})")
    return {"what": what, "rounding_flips": int(differ.sum()), "max_logit_error": logit_err}


def verify_export(model: SEAD, onnx_bytes: bytes, seed: int = 0) -> list[dict]:
    """Raise ExportMismatch on any disagreement; return what was compared."""
    session = cpu_session(onnx_bytes, needed_by="export's check against PyTorch")
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    task = model.config.task
    report = []
    for length in LENGTHS:
        count = 4 if length <= 1000 else 1
        x, gens = _problems(task, length, count, rng)
        cells = "x".join(map(str, x.shape[2:]))  # L, or HxW on a grid
        random_state = model.code.random((count, model.config.state_channels, *x.shape[2:]), gen)
        report.append(compare_step(model, session, x, random_state * x[:, :1], f"random state, L={cells}"))
        state = model.initial_state(x)
        for t in range(3):  # real states along a solve
            report.append(compare_step(model, session, x, state, f"solve state t={t}, L={cells}"))
            with torch.no_grad():
                state = model.step(x, state)
    for length in (5, 16, 40):
        x, gens = _problems(task, length, 8, rng)
        cells = "x".join(map(str, x.shape[2:]))
        cap = default_step_cap(sum(x.shape[2:]))
        want = tuple(v.numpy() for v in solve(model, x, cap, gens))  # symbols, steps, converged
        got = plain_ort_solve(session, x.numpy(), cap, None if gens is None else gens.numpy())
        if not all(np.array_equal(g, w) for g, w in zip(got, want)):
            raise ExportMismatch(f"full solve at L={cells}: ONNX answers, steps or convergence differ from PyTorch "
                                 f"(steps {got[1].tolist()} vs {want[1].tolist()})")
        report.append({"what": f"full solve, 8 problems, L={cells}", "steps": want[1].tolist()})
    return report
