import os
import re

import pytest

# Tiny models train fastest on one thread, and on a machine that is busy with anything else,
# OpenMP's spin-waiting made two-thread torch 8x slower (30.9 s against 3.8 s for a 15-step run)
os.environ.setdefault("OMP_NUM_THREADS", "1")


# Markers that a skip may carry without failing CI (SEAD_STRICT_SKIPS=1, set by .ci/run): the
# hardware this machine lacks, and the Ray end-to-end tests `make test` leaves to `make test-heavy`
ALLOWED_SKIPS = ("gpu", "trt", "heavy")


def _named(markexpr: str, marker: str) -> bool:
    return re.search(rf"\b{marker}\b", markexpr) is not None


def pytest_collection_modifyitems(config, items):
    """Tests marked heavy run only when -m names them (pytest -m heavy), so the default suite stays
    fast. Tests marked slow, or slowest (the largest sizes), are deselected, not skipped, unless -m
    names them: `pytest -m slow` (CI), `pytest -m "slow or slowest"` (make test-slow)."""
    markexpr = config.getoption("markexpr") or ""
    kept, dropped = [], []
    for item in items:
        marks = item.keywords
        if ("slowest" in marks and not _named(markexpr, "slowest")) or \
                ("slow" in marks and not (_named(markexpr, "slow") or _named(markexpr, "slowest"))):
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
    _may_skip.update(item.nodeid for item in items if any(item.get_closest_marker(m) for m in ALLOWED_SKIPS))
    if _named(markexpr, "heavy"):
        return
    skip = pytest.mark.skip(reason="heavy: run with pytest -m heavy")
    for item in items:
        if "heavy" in item.keywords:
            item.add_marker(skip)


# -- SEAD_STRICT_SKIPS=1: a skip is allowed only for a test marked gpu, trt or heavy ----------------
# A broken install (an extra missing, a model not built) turns whole files into skips through
# importorskip and skipif; in CI that must fail, not pass quietly.
_unexplained_skips: list[str] = []
_may_skip: set[str] = set()  # node ids of the tests that carry one of ALLOWED_SKIPS's markers


def _strict() -> bool:
    return os.environ.get("SEAD_STRICT_SKIPS") == "1"


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    return longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)


def pytest_collectreport(report):
    if _strict() and report.skipped:  # a whole module skipped at import (importorskip, a module-level skip)
        _unexplained_skips.append(f"{report.nodeid}: {_skip_reason(report)}")


def pytest_runtest_logreport(report):
    if not (_strict() and report.skipped) or hasattr(report, "wasxfail"):
        return
    if report.nodeid not in _may_skip:
        _unexplained_skips.append(f"{report.nodeid}: {_skip_reason(report)}")


def pytest_sessionfinish(session, exitstatus):
    if _unexplained_skips:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if _unexplained_skips:
        terminalreporter.write_sep("=", f"SEAD_STRICT_SKIPS=1: {len(_unexplained_skips)} skip(s) of a test not "
                                        f"marked {'/'.join(ALLOWED_SKIPS)} fail the run", red=True)
        for line in _unexplained_skips:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """Untrained checkpoints of each task (random weights: enough for format and parity tests)."""
    torch = pytest.importorskip("torch")
    from sead.train.checkpoint import save_checkpoint
    from sead.train.loop import TrainConfig, build_model

    folder = tmp_path_factory.mktemp("ckpt")
    paths = {}
    for task in ("addition", "parity", "rule110", "multiplication"):
        torch.manual_seed(0)
        model = build_model(TrainConfig(task=task, hidden=16, state_channels=4, readout_hidden=16))
        if task == "multiplication":  # at init this grid rule settles in one step everywhere; with
            with torch.no_grad():    # tripled weights it runs for 3 to 7 steps, or cycles past any cap
                model.rule_in.weight.mul_(3)
                model.rule_out.weight.mul_(3)
        paths[task] = folder / f"{task}.pt"
        save_checkpoint(paths[task], model, {"max_train_cells": 16, "note": "untrained test model"})
    for task in ("addition", "multiplication"):  # symbol states: the state is a one-hot class
        torch.manual_seed(0)
        model = build_model(TrainConfig(task=task, hidden=16, state="symbol"))
        paths[f"{task}_symbol"] = folder / f"{task}_symbol.pt"
        save_checkpoint(paths[f"{task}_symbol"], model, {"max_train_cells": 16, "note": "untrained test model"})
    torch.manual_seed(0)  # a symbol state read by its digits (s + 10 c as s and c)
    model = build_model(TrainConfig(task="multiplication", hidden=16, state="symbol", read_digits=10))
    paths["multiplication_digits"] = folder / "multiplication_digits.pt"
    save_checkpoint(paths["multiplication_digits"], model, {"max_train_cells": 16, "note": "untrained test model"})
    return paths


@pytest.fixture(scope="session")
def tiny_onnx(tiny_checkpoints, tmp_path_factory):
    """The untrained checkpoints, exported (and verified) as one-step ONNX files."""
    from sead.export.exporter import export_checkpoint

    folder = tmp_path_factory.mktemp("onnx")
    return {t: export_checkpoint(p, folder / f"{t}.onnx")[0] for t, p in tiny_checkpoints.items()}


def torch_reference(checkpoint, lines, max_steps=None):
    """The PyTorch reference loop, one problem at a time (no padding at all):
    -> [(answer or None, steps, converged)]."""
    from sead.runtime.tasks import get_task
    from sead.train.checkpoint import load_checkpoint
    from sead.train.data import encode_batch
    from sead.train.model import solve

    model, _ = load_checkpoint(checkpoint)
    task = get_task(model.config.task)
    out = []
    for line in lines:
        p = task.parse(line)
        x, _, gens = encode_batch(task.name, [p])
        cap = max_steps if max_steps is not None else task.step_cap(p)
        symbols, steps, conv = solve(model, x, cap, gens)
        out.append((task.decode(symbols[0].numpy(), p) if conv[0] else None, int(steps[0]), bool(conv[0])))
    return out


@pytest.fixture(scope="session")
def reference():
    pytest.importorskip("torch")
    return torch_reference


# -- waiting on events, never on the clock ---------------------------------------------------------
HOLD_SECONDS = 120  # a bound on every wait below, so that a bug fails a test instead of hanging it


class Gate:
    """Holds one tile-window call of an engine until the test releases it, so that a long tape
    (runtime/loop.py: TapeJob, run in tile windows) is in flight for exactly as long as a test
    needs, whatever the machine's speed. The first `after` window calls pass; the next one sets
    `held` and waits for `release`; later calls pass. `steps`: the steps window calls ran."""

    def __init__(self, after: int = 0):
        import threading

        self.after, self.calls, self.steps = after, 0, 0
        self.held, self.release = threading.Event(), threading.Event()
        self.lock = threading.Lock()

    def engine(self, name: str = "ort"):
        """-> an engine factory for Runtime(model, gate.engine()): engine `name`, its windows gated."""
        def make(step):
            from sead.runtime.engines import make_engine
            return _GatedEngine(make_engine(step, name), self)
        return make

    def wait_held(self) -> None:
        assert self.held.wait(HOLD_SECONDS), f"no tile window reached the gate in {HOLD_SECONDS} s"


class _GatedEngine:
    def __init__(self, engine, gate: Gate):
        self.engine, self.gate = engine, gate

    def __getattr__(self, name):  # everything but run_windows is the engine's own
        return getattr(self.engine, name)

    def run_windows(self, codes, state_codes, k, owned=None):
        gate = self.gate
        with gate.lock:
            gate.calls += 1
            hold = gate.calls == gate.after + 1
        if hold:
            gate.held.set()
            if not gate.release.wait(HOLD_SECONDS):
                raise AssertionError(f"the gate was not released in {HOLD_SECONDS} s")
        out = self.engine.run_windows(codes, state_codes, k, owned)
        if owned is None:  # with owned, a settled round's steps are counted again, not run
            with gate.lock:
                gate.steps += k
        return out


@pytest.fixture
def gate():
    """A Gate for one test; released at teardown, so no worker thread is left waiting."""
    g = Gate()
    yield g
    g.release.set()
