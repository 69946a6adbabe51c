"""One conformance test for every engine this machine has: the protocol the loop relies on
(runtime/engines/protocol.py: counts of changing steps, budgets, classes, keep, tile windows with
hot cells and owned counts, rings, grids), checked against a plain step-by-step loop over the
exported step in ONNX Runtime; then tiled solves through each engine against the dense `ort` loop.

An engine is skipped only when its package or its GPU is missing (EngineUnavailable with
quiet=True); any other refusal is a failure: a broken engine must not read as a skip."""
import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from sead.runtime import Runtime  # noqa: E402
from sead.runtime.engines import make_engine  # noqa: E402
from sead.runtime.errors import EngineUnavailable  # noqa: E402
from sead.runtime.model_file import load_step_model  # noqa: E402
from sead.runtime.rule import Rule  # noqa: E402
from sead.runtime.tasks import get_task  # noqa: E402

ENGINES = ["ort", "ort-cl-on-cpu", "ort-slots-on-cpu", "ort-host-windows-on-cpu",
           pytest.param("ort-cuda", marks=pytest.mark.gpu),
           pytest.param("trt", marks=pytest.mark.trt)]


def _factory(name, k=None):
    def make(step):
        if name == "ort-cl-on-cpu":  # ort-cuda's layout, slots and bookkeeping, on the CPU provider
            from sead.runtime.engines.ort import OrtEngine
            return OrtEngine(step, "cpu", layout="cl", cuda_graphs=True, graph_rows=True)
        if name == "ort-slots-on-cpu":  # ort's layout with windows as batches in slots (ort runs them as one graph)
            from sead.runtime.engines.ort import OrtEngine
            return OrtEngine(step, "cpu", cuda_graphs=True)
        if name == "ort-host-windows-on-cpu":  # as make_engine builds ort-cuda: its small windows on `ort`
            from sead.runtime.engines import with_host_windows
            from sead.runtime.engines.ort import OrtEngine
            return with_host_windows(step, OrtEngine(step, "cpu", layout="cl", cuda_graphs=True, graph_rows=True))
        return make_engine(step, name, k)
    return make


def _engine(step, name):
    try:
        return _factory(name)(step)
    except EngineUnavailable as exc:
        if exc.quiet:  # the package or the device is missing here
            pytest.skip(str(exc))
        raise


class Plain:
    """The exported step run one step at a time: states[t] (B, C_s, *S) and classes[t] (B, *S)."""

    def __init__(self, step, task, parsed, shape, steps):
        import onnxruntime as ort

        self.step, self.task = step, task
        self.x = np.ascontiguousarray(task.encode_many(parsed, shape[0] if task.rank == 1 else shape))
        session = ort.InferenceSession(step.proto.SerializeToString(), providers=["CPUExecutionProvider"])
        state = np.zeros((len(parsed), step.metadata.state_channels, *shape), np.float32)
        self.states, self.classes = [], []
        for _ in range(steps + 1):
            nxt, logits = session.run(None, {"problem": self.x, "state": state})
            self.states.append(state)
            self.classes.append(logits.argmax(1))
            state = nxt

    def changed(self, t: int, cells=None) -> np.ndarray:
        """(B,) whether step t changed each row (over `cells`, a boolean mask (B, *S), if given)."""
        moved = (self.states[t] != self.states[t - 1]).any(axis=1)
        if cells is not None:
            moved &= cells
        return moved.reshape(len(moved), -1).any(axis=1)

    def last(self, row: int, first: int, upto: int, cells=None) -> int:
        moved = [t for t in range(first, upto + 1) if self.changed(t, cells)[row]]
        return moved[-1] - first + 1 if moved else 0

    def codes(self, t: int) -> np.ndarray:
        """The state after t steps as state codes (runtime/rule.py)."""
        rule = Rule.from_step(self.step)
        s = self.states[t]
        if rule.state_code == "sign":
            bits = ((s > 0) * (2 ** np.arange(rule.state_channels)).reshape(1, -1, *[1] * (s.ndim - 2))).sum(1)
            code = np.where((s == 0).all(axis=1), rule.zero_code, bits)
        else:
            code = np.where((s == 0).all(axis=1), rule.zero_code, s.argmax(1))
        return code.astype(rule.code_dtype)


def _problems(task, rng, count, size):
    parsed = [task.parse(task.random_line(rng, size, generations=8)) for _ in range(count)]
    if task.boundary == "ring":
        return parsed, (size,)
    return parsed, tuple(max(task.shape(p)[i] for p in parsed) + 1 for i in range(task.rank))


def _codes(task, parsed, shape):
    from sead.runtime.tasks import Problems
    return task.codes(Problems.from_parsed(task, parsed), np.arange(len(parsed)), shape)


MODELS = ["addition", "parity", "rule110", "multiplication", "addition_symbol", "multiplication_symbol"]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("name", ENGINES)
def test_rows_count_read_out_and_keep(tiny_onnx, name, model):
    step = load_step_model(tiny_onnx[model])
    engine = _engine(step, name)
    task = get_task(step.metadata.task)
    rng = np.random.default_rng(0)
    parsed, shape = _problems(task, rng, 6, 5 if task.rank == 2 else 20)
    plain = Plain(step, task, parsed, shape, 16)
    generations = task.convergence == "generations"
    codes = _codes(task, parsed, shape)
    batch = engine.start(codes, wrap=task.boundary == "ring", generations=generations)
    assert batch.rows == 6
    budget = np.array([0, 1, 2, 3, 4, 4]) if generations else None
    last = batch.advance(4, budget)
    ran = budget if generations else np.full(6, 4)
    for i in range(6):
        assert last[i] == plain.last(i, 1, int(ran[i])), f"row {i}"
        assert np.array_equal(batch.classes()[i], plain.classes[int(ran[i])][i])
    batch.keep(np.array([1, 3, 4, 5]))  # 4 of 6: the rows stay in place
    batch.advance(4, np.array([4, 4, 4, 4]) if generations else None)
    for row, i in enumerate([1, 3, 4, 5]):
        assert np.array_equal(batch.classes()[row], plain.classes[int(ran[i]) + 4][i])
    # row 5 goes on in place, and in a batch of its own started from its state codes
    moved = engine.start(codes[[5]], wrap=task.boundary == "ring", generations=generations,
                         state_codes=batch.state_codes()[[3]])
    batch.keep(np.array([3]))
    for b in (batch, moved):
        assert b.rows == 1
        last = b.advance(8, np.array([8]) if generations else None)
        assert last[0] == plain.last(5, int(ran[5]) + 5, int(ran[5]) + 12)
        assert np.array_equal(b.classes()[0], plain.classes[int(ran[5]) + 12][5])
        b.close()
    engine.close()


@pytest.mark.parametrize("model", ["addition", "parity", "addition_symbol", "rule110"])
@pytest.mark.parametrize("name", ENGINES)
def test_tile_windows_hot_cells_and_owned_counts(tiny_onnx, name, model):
    """run_windows: exactly k steps on cut rows (never wrapped, even for a ring task's windows),
    from no state or from state codes; hot cells are those changed at step k; with `owned`, the
    count is over owned cells only. classify reads state codes out."""
    step = load_step_model(tiny_onnx[model])
    engine = _engine(step, name)
    task = get_task(step.metadata.task)
    rng = np.random.default_rng(3)
    parsed = [task.parse(task.random_line(rng, 30, generations=3)) for _ in range(3)]
    length = max(p.length for p in parsed) + 1
    codes = _codes(task, parsed, (length,))
    if task.boundary == "ring":  # a ring task's windows are cut rows: the reference runs them as lines
        plain = _line_plain(step, np.ascontiguousarray(task.encode_many(parsed, length)), 9)
    else:
        plain = Plain(step, task, parsed, (length,), 9)
    states, hot = engine.run_windows(codes, None, 4)
    assert np.array_equal(hot, (plain.states[4] != plain.states[3]).any(axis=1))
    assert np.array_equal(states, plain.codes(4))
    states, hot = engine.run_windows(codes, plain.codes(4), 4)
    assert np.array_equal(hot, (plain.states[8] != plain.states[7]).any(axis=1))
    assert np.array_equal(engine.classify(codes, states), plain.classes[8])
    owned = np.zeros(codes.shape, bool)
    owned[:, 10:20] = True
    _, last = engine.run_windows(codes, plain.codes(2), 4, owned)
    assert last == max(plain.last(i, 3, 6, owned) for i in range(3))
    assert np.array_equal(engine.classify(codes, None), plain.classes[0])
    engine.close()


def _line_plain(step, x, steps):
    """The plain loop over cut rows of a ring rule: wrapping turned off, as tile windows run."""
    import onnxruntime as ort
    from onnx import helper

    proto = type(step.proto)()
    proto.CopyFrom(step.proto)
    graph = proto.graph
    first = next(n for n in graph.node if n.op_type == "Conv")
    wrap = next(n for n in graph.node if first.input[0] in n.output)
    first.input[0] = wrap.input[1]  # the concat of [problem; state], unwrapped
    del first.attribute[:]
    first.attribute.append(helper.make_attribute("pads", [1, 1]))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    plain = Plain.__new__(Plain)
    plain.step, plain.x = step, x
    state = np.zeros((x.shape[0], step.metadata.state_channels, x.shape[2]), np.float32)
    plain.states, plain.classes = [], []
    for _ in range(steps + 1):
        nxt, logits = session.run(None, {"problem": x, "state": state})
        plain.states.append(state)
        plain.classes.append(logits.argmax(1))
        state = nxt
    return plain


@pytest.mark.parametrize("name", ENGINES)
def test_shipped_models_settle_exactly(name):
    """The shipped addition rule: carry chains make some rows run longer than a call; every count
    equals the plain loop's and every answer the oracle's."""
    step = load_step_model("addition")
    engine = _engine(step, name)
    task = get_task("addition")
    rng = np.random.default_rng(5)
    lines = ["0+0", "1+1", "99+1", "9" * 20 + "+1", "1+" + "9" * 12] + [task.random_line(rng, n) for n in (3, 9, 20)]
    parsed = [task.parse(line) for line in lines]
    plain = Plain(step, task, parsed, (22,), 30)
    changing = [[t for t in range(1, 31) if plain.changed(t)[i]] for i in range(len(lines))]
    assert all(c == list(range(1, len(c) + 1)) for c in changing)  # a deterministic rule: steps 1..c change
    batch = engine.start(_codes(task, parsed, (22,)))
    got = batch.advance(4)
    assert got.tolist() == [min(len(c), 4) for c in changing]
    classes = batch.classes()
    settled = np.flatnonzero(got < 4).tolist()  # rows that settled within the call: their answers are final
    assert {0, 1} <= set(settled) and 3 not in settled  # 0+0 and 1+1 settle, the 20-digit chain cannot
    assert [task.decode(classes[i], parsed[i]) for i in settled] == [task.answer(parsed[i]) for i in settled]
    batch.close()
    engine.close()


@pytest.mark.parametrize("dense_first", [0, 3])
@pytest.mark.parametrize("name", ENGINES)
def test_tiled_solves_on_every_engine(tiny_onnx, name, dense_first):
    """Long tapes cut into 8-cell tiles run through the engine exactly like the dense `ort` loop,
    from the first step or handed over from rows after dense_first steps."""
    rng = np.random.default_rng(11)
    for model in ("addition", "rule110", "addition_symbol"):
        path = str(tiny_onnx[model])
        t = get_task(model.removesuffix("_symbol"))
        lines = [t.random_line(rng, n, 9) for n in (50, 90, 130)]
        cap = None if model == "rule110" else 30
        with Runtime(path, "ort", tile_from=10**9, self_test=False) as dense:
            want = dense.solve(lines, max_steps=cap)
        _engine(load_step_model(path), name).close()  # skips where the engine is missing
        with Runtime(path, _factory(name), tile_from=40, tile=(8, 2), dense_first=dense_first, self_test=False) as tiled:
            assert tiled.solve(lines, max_steps=cap) == want


@pytest.mark.parametrize("model", ["parity", "rule110", "addition"])
def test_the_lookup_layout_solves_as_the_arithmetic_ones(model):
    """The shipped addition, parity and Rule 110 rules have a step table (addition's a million
    entries), so `ort` runs them as lookups (rows: counts, budgets, rings, packing; and tile
    windows). The same problems through the cf and cl layouts, dense and tiled, give the same
    answers, steps and flags, and the answers are the oracle's."""
    from sead.runtime.engines.ort import OrtEngine

    step = load_step_model(model)
    assert OrtEngine(step, "cpu").layout == "lookup"
    assert OrtEngine(step, "cpu", lookup_entries=1 << 16).layout == ("cf" if model == "addition" else "lookup")
    t = get_task(model)
    rng = np.random.default_rng(12)
    lines = [t.random_line(rng, n, 40) for n in (1, 2, 7, 16, 60, 300, 700, 3000)]
    lines += {"parity": ["1" * 900, "01" * 800], "addition": ["9" * 900 + "+1", "1+" + "9" * 700]}.get(model, [])
    got = {}
    for layout in ("lookup", "cf", "cl"):
        for tiles in (dict(tile_from=10**9), dict(tile_from=100, tile=(16, 4), dense_first=0)):
            engine = lambda s, layout=layout: OrtEngine(s, "cpu", layout=layout, window_layout=layout)
            with Runtime(model, engine, **tiles) as rt:
                got[layout, tiles["tile_from"]] = rt.solve(lines)
    want = got["cf", 10**9]
    assert all(results == want for results in got.values())
    assert [r.answer for r in want] == [t.answer(t.parse(line)) for line in lines]


@pytest.mark.parametrize("model", ["parity", "rule110", "addition"])
def test_class_coded_windows_solve_as_lookup_rows_do(model):
    """Tile windows in class-coded blocks (window_layout "classes"), run as one graph (`ort`'s
    windows) and as batches in engine-owned slots (prepare, advance, finish: `ort-cuda`'s path),
    solve tiled problems with the answers, steps and flags of dense lookup rows; the engine runs
    the last round's recount and the readout in the lookup layout, and refuses the classes layout
    for rows."""
    from sead.runtime.engines.ort import OrtEngine

    step = load_step_model(model)
    with pytest.raises(ValueError, match="tile windows only"):
        OrtEngine(step, "cpu", layout="classes")
    t = get_task(model)
    rng = np.random.default_rng(13)
    lines = [t.random_line(rng, n, 40) for n in (1, 7, 60, 300, 700, 3000)]
    lines += {"parity": ["1" * 900, "01" * 800], "addition": ["9" * 900 + "+1", "1+" + "9" * 700]}.get(model, [])
    with Runtime(model, "ort", tile_from=10**9) as rt:
        want = rt.solve(lines)
    for slots in (False, True):
        engine = lambda s, slots=slots: OrtEngine(s, "cpu", window_layout="classes", cuda_graphs=slots)
        with Runtime(model, engine, tile_from=100, tile=(16, 4), dense_first=0) as rt:
            assert rt.solve(lines) == want, f"slots={slots}"
    assert [r.answer for r in want] == [t.answer(t.parse(line)) for line in lines]


def test_small_windows_run_on_the_host_and_large_ones_on_the_device():
    """A GPU engine (as make_engine builds ort-cuda and trt) hands tile-window and readout calls of
    fewer than `cells` cells to an `ort` engine on the host (latency-bound work) and keeps larger
    ones; both give `ort`'s states, hot cells and classes. Shown with ort-cuda's layout and slots
    on the CPU provider as the device; where the host engine cannot start, the device runs all."""
    from sead.runtime.engines.host_windows import HostWindows
    from sead.runtime.engines.ort import OrtEngine
    from sead.runtime.errors import EngineUnavailable

    step = load_step_model("addition")
    task = get_task("addition")
    rng = np.random.default_rng(17)
    ref = OrtEngine(step, "cpu")
    small, large = (_codes(task, [task.parse(task.random_line(rng, n)) for _ in range(rows)], (n + 2,))
                    for n, rows in ((40, 4), (300, 8)))
    assert small.size < 1000 <= large.size

    def unavailable():
        raise EngineUnavailable("no onnxruntime here")

    for make_host, on_host in ((lambda: OrtEngine(step, "cpu"), 2), (unavailable, 0)):
        engine = HostWindows(OrtEngine(step, "cpu", layout="cl", cuda_graphs=True), make_host, cells=1000)
        for codes in (small, large):
            want_states, want_hot = ref.run_windows(codes, None, 8)
            got_states, got_hot = engine.run_windows(codes, None, 8)
            assert np.array_equal(got_states, want_states) and np.array_equal(got_hot, want_hot)
            assert np.array_equal(engine.classify(codes, got_states), ref.classify(codes, want_states))
        assert (engine.host_calls, engine.device_calls) == (on_host, 4 - on_host)
        engine.close()
    ref.close()
