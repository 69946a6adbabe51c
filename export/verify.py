"""Prove an exported step equal to the PyTorch step before `sead export` returns.

Compared on random states and on real problem states at several lengths (1 to 100,000 cells),
then in a short full solve both ways: the PyTorch reference loop against the plain ONNX Runtime
loop (runtime/bench.py), so the check depends on neither the runtime's solver nor its engines.
The state is discrete, so it must match exactly; a value may differ only where the PyTorch
decision is within float rounding of a tie (a sign's pre-activation near zero, a symbol's two
largest pre-activations). Logits must agree to LOGIT_TOL of the largest one.

The runtime runs the rule in its own forms (runtime/graph/: the cf and cl layouts, which sum in
another order than the exported convolution, and the lookup layout where the rule has a step
table, computed in float64); they are held to the same rule on the real states:
each form's next state may differ from PyTorch's only where the decision margin is within rounding.
"""
from __future__ import annotations

from functools import cached_property

import numpy as np
import torch

from sead.runtime.bench import cpu_session, plain_ort_solve
from sead.runtime.engines.ort import CPU_OPTIMIZATION
from sead.runtime.errors import ExportMismatch
from sead.runtime.tasks import get_task
from sead.runtime.tasks.base import default_step_cap
from sead.train.data import encode_problems
from sead.train.model import SEAD, solve

LOGIT_TOL = 1e-4  # of the largest logit's size (at least 1): float32 rounds large logits coarser
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
    tolerance = LOGIT_TOL * max(1.0, float(np.abs(want_logits.numpy()).max(initial=0.0)))
    if not logit_err <= tolerance:  # NaN fails this test, unlike `logit_err > tolerance`
        raise ExportMismatch(f"{what}: logits differ by up to {logit_err:.3g} (tolerance {tolerance:.3g})")
    return {"what": what, "rounding_flips": int(differ.sum()), "max_logit_error": logit_err}


class RuntimeForms:
    """One step of the rule in each of the runtime's forms, from state codes to state codes."""

    def __init__(self, onnx_bytes: bytes):
        import onnx

        from sead.runtime.model_file import StepMetadata, StepModel
        from sead.runtime.rule import Rule

        from sead.runtime.errors import ModelFileError

        proto = onnx.load_from_string(onnx_bytes)
        meta = StepMetadata.from_props({p.key: p.value for p in proto.metadata_props})
        try:
            self.rule = Rule.from_step(StepModel("<export>", proto, meta))
        except ModelFileError as exc:  # the graph the exporter wrote cannot be what the runtime runs
            raise ExportMismatch(str(exc).removeprefix("<export>: ")) from None
        self.sessions = {}

    @cached_property
    def lookup_tables(self):
        """The lookup layout's tables (None where the rule has no step table), built once."""
        from sead.runtime import graph as G
        return G.lookup_tables(self.rule)

    def _session(self, key, build):
        if key not in self.sessions:
            self.sessions[key] = cpu_session(build().SerializeToString(), needed_by="export's check of the runtime forms",
                                             optimization=CPU_OPTIMIZATION)
        return self.sessions[key]

    def codes(self, state: torch.Tensor) -> np.ndarray:
        """(B, C_s, *S) states -> (B, *S) state codes (runtime/rule.py)."""
        r, s = self.rule, state.numpy()
        zero = (s == 0).all(axis=1)
        if r.state_code == "sign":
            value = ((s > 0) * (2 ** np.arange(r.state_channels)).reshape(1, -1, *[1] * (s.ndim - 2))).sum(1)
        else:
            value = s.argmax(1)
        return np.where(zero, r.zero_code, value).astype(r.code_dtype)

    def steps(self, x: torch.Tensor, state: torch.Tensor) -> dict[str, np.ndarray]:
        """-> {form: (B, *S) state codes after one step from `state`}."""
        from sead.runtime import graph as G
        from sead.runtime.layout import neighbour_table

        r = self.rule
        mask = x[:, 0].numpy() > 0
        symbols = x[:, 1:].numpy().argmax(1) + 1
        codes = np.where(mask, symbols, 0).astype(np.uint8)
        state_codes = self.codes(state)
        kept = tuple(slice(0, n) for n in codes.shape)
        if not r.ring:  # a row ends in an empty cell (a grid: its last row and column), as the runtime's do
            pads = [(0, 0)] + [(0, 1)] * r.rank
            codes = np.pad(codes, pads)
            state_codes = np.pad(state_codes, pads, constant_values=r.zero_code)
        shape = codes.shape[1:]
        flat = lambda a: a.reshape(len(a), -1)
        out = {}
        prep = self._session(("cl", "prepare"), lambda: G.cl_prepare(r, False))
        feeds = dict(zip([o.name for o in prep.get_outputs()],
                         prep.run(None, {"codes": flat(codes), "neighbours": np.ascontiguousarray(neighbour_table(shape, r.ring)),
                                         "state_codes": flat(state_codes)})))
        feeds["neighbours"] = np.ascontiguousarray(neighbour_table(shape, r.ring))
        adv = self._session(("cl", "advance"), lambda: G.cl_advance(r, 1, "hot"))
        nxt = adv.run(["state_out"], {i.name: feeds[i.name] for i in adv.get_inputs()})[0]
        fin = self._session(("cl", "finish"), lambda: G.cl_finish(r))
        out["cl"] = fin.run(["state_codes"], {"codes": flat(codes), "state": nxt})[0].reshape(codes.shape)[kept]
        if r.state_code == "sign":
            prep = self._session(("cf", "prepare"), lambda: G.cf_prepare(r, False, False, r.ring))
            feeds = dict(zip([o.name for o in prep.get_outputs()],
                             prep.run(None, {"codes": codes, "state_codes": state_codes})))
            adv = self._session(("cf", "advance"), lambda: G.cf_advance(r, 1, False, "hot", r.ring, fused=True))
            nxt = adv.run(["state_out"], {i.name: feeds[i.name] for i in adv.get_inputs()})[0]
            fin = self._session(("cf", "finish"), lambda: G.cf_finish(r, False))
            out["cf"] = fin.run(["state_codes"], {"codes": codes, "state": nxt})[0][kept]
        tables = self.lookup_tables
        if tables is not None:
            prep = self._session(("lookup", "prepare"), lambda: G.lookup_prepare(tables, False, False))
            feeds = dict(zip([o.name for o in prep.get_outputs()],
                             prep.run(None, {"codes": codes, "state_codes": state_codes})), **tables.inputs)
            adv = self._session(("lookup", "advance"), lambda: G.lookup_advance(tables, 1, False, "hot", r.ring))
            nxt = adv.run(["state_out"], {i.name: feeds[i.name] for i in adv.get_inputs()})[0]
            fin = self._session(("lookup", "finish"), lambda: G.lookup_finish(tables, False, readout=False))
            out["lookup"] = fin.run(["state_codes"], {"codes": codes, "state": nxt})[0][kept]
        return out


def compare_forms(model: SEAD, forms: RuntimeForms, x: torch.Tensor, state: torch.Tensor, what: str) -> dict:
    """Each runtime form's next state against PyTorch's, on a real (reachable) state."""
    with torch.no_grad():
        pre = model.preactivation(x, state)
        want = forms.codes(model.step(x, state))
    margin = model.code.decision_margin(pre).numpy().min(axis=1)  # a cell's closest decision
    flips = {}
    for form, got in forms.steps(x, state).items():
        differ = got != want
        real = differ & ~(margin <= ROUNDING)
        if real.any():
            raise ExportMismatch(f"{what}: the runtime's {form} form differs from PyTorch in {int(real.sum())} cells "
                                 f"(smallest decision margin there {float(margin[real].min()):.3g})")
        flips[form] = int(differ.sum())
    real_cells = x[:, 0].numpy() > 0
    return {"what": f"runtime forms, {what}", "rounding_flips": sum(flips.values()), "flips_by_form": flips,
            "min_margin": float(margin[real_cells].min()) if real_cells.any() else None}


def verify_export(model: SEAD, onnx_bytes: bytes, seed: int = 0) -> list[dict]:
    """Raise ExportMismatch on any disagreement; return what was compared."""
    session = cpu_session(onnx_bytes, needed_by="export's check against PyTorch")
    forms = RuntimeForms(onnx_bytes)
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
            if length <= 1000 or t == 0:
                report.append(compare_forms(model, forms, x, state, f"solve state t={t}, L={cells}"))
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
