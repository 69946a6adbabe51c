"""One conformance test for every engine this machine has: the protocol the loop relies on
(runtime/engines/protocol.py: budgets, `last`, state(), hot(), owned cells, wrap, symbols, keep),
checked against a plain step-by-step loop over the exported step in ONNX Runtime; then tiled
solves through each engine against the dense `ort` loop."""
import numpy as np
import pytest

from sead.runtime import Runtime
from sead.runtime.api import make_engine
from sead.runtime.errors import EngineUnavailable

pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from sead.runtime.model_file import load_step_model  # noqa: E402
from sead.runtime.tasks import get_task  # noqa: E402

ENGINES = ["ort", "ort-cuda-path-on-cpu", pytest.param("ort-cuda", marks=pytest.mark.gpu),
           pytest.param("trt", marks=pytest.mark.trt)]


def _engine_factory(name, k=4):
    def make(step):
        if name == "ort-cuda-path-on-cpu":  # ort-cuda's device-resident path, on the CPU provider
            from sead.runtime.engines.ort import OrtCudaEngine
            return OrtCudaEngine(step, (k,), device_type="cpu")
        return make_engine(step, name, k=k)
    return make


def _engine(step, name):
    try:
        return _engine_factory(name)(step)
    except EngineUnavailable as exc:
        pytest.skip(str(exc))


def _plain_steps(step, x, n, state=None):
    import onnxruntime as ort

    sess = ort.InferenceSession(step.proto.SerializeToString(), providers=["CPUExecutionProvider"])
    if state is None:
        state = np.zeros((x.shape[0], step.metadata.state_channels, x.shape[2]), np.float32)
    states = [state]
    for _ in range(n):
        state = sess.run(["next_state"], {"problem": x, "state": state})[0]
        states.append(state)
    return states, sess


def _changed(states, t, cells=slice(None)):
    """(B,) whether step t (1-based) changed each row, over `cells`."""
    return (states[t][:, :, cells] != states[t - 1][:, :, cells]).any(axis=(1, 2))


@pytest.mark.parametrize("empty_tail", [0, 1], ids=["full-rows", "rows-ending-empty"])  # CPU packs the latter
@pytest.mark.parametrize("name", ENGINES)
def test_engine_protocol(tiny_onnx, name, empty_tail):
    step = load_step_model(tiny_onnx["addition"])
    engine = _engine(step, name)
    task = get_task("addition")
    rng = np.random.default_rng(0)
    parsed = [task.parse(task.random_line(rng, 20)) for _ in range(6)]
    x = np.stack([task.encode(p) for p in parsed])
    x = np.concatenate([x, np.zeros((6, x.shape[1], empty_tail), np.float32)], axis=2)
    states, sess = _plain_steps(step, x, 12)
    batch = engine.start(x)
    assert batch.rows == 6
    budget = np.minimum(np.arange(6), 4)  # row i runs min(i, 4) steps and then holds its state
    last = batch.advance(budget, 4)
    state, hot = batch.state(), batch.hot()
    for i in range(6):
        ran = int(budget[i])
        moved = [t for t in range(1, ran + 1) if _changed(states, t)[i]]
        assert last[i] == (moved[-1] if moved else 0)
        assert np.array_equal(state[i], states[ran][i])
        final = (states[ran][i] != states[ran - 1][i]).any(axis=0) if ran else np.zeros(x.shape[2], bool)
        assert np.array_equal(hot[i], final)
    symbols = batch.symbols()
    for i in (4, 5):
        logits = sess.run(["logits"], {"problem": x[i:i + 1], "state": states[4][i:i + 1]})[0]
        assert np.array_equal(symbols[i], logits[0].argmax(0))
    batch.keep(np.array([4, 5]))
    assert batch.rows == 2
    batch.advance(np.full(2, 4, np.int64), 4)
    assert np.array_equal(batch.state()[1], states[8][5])
    assert np.array_equal(batch.symbols()[1], sess.run(["logits"], {"problem": x[5:6], "state": states[8][5:6]})[0][0].argmax(0))
    batch.close()
    engine.close()


@pytest.mark.parametrize("name", ENGINES)
def test_settle_batches(name):
    """settle=True (whole problems of a fixed-point task): advance() returns min(changing steps,
    budget); a row that settled holds its fixed point and reads it out, after keep() too. The
    shipped model: carry chains make some rows run longer than a call."""
    step = load_step_model("addition")
    engine = _engine(step, name)
    task = get_task("addition")
    rng = np.random.default_rng(5)
    lines = ["0+0", "1+1", "99+1", "9" * 20 + "+1", "1+" + "9" * 12] + [task.random_line(rng, n) for n in (3, 9, 20)]
    parsed = [task.parse(line) for line in lines]
    x = task.encode_many(parsed, 22)  # every row ends in empty cells: the CPU engine packs them
    states, sess = _plain_steps(step, x, 30)
    changing = [[t for t in range(1, 31) if _changed(states, t)[i]] for i in range(len(lines))]
    assert all(c == list(range(1, len(c) + 1)) for c in changing)  # a deterministic rule: steps 1..c change
    assert any(len(c) < 4 for c in changing) and any(len(c) >= 4 for c in changing)
    batch = engine.start(x, settle=True)
    budget = np.array([4, 4, 2, 4, 3, 4, 1, 4])
    got = batch.advance(budget, 4)
    assert got.tolist() == [min(len(c), int(b)) for c, b in zip(changing, budget)]
    settled = np.flatnonzero(got < budget)
    state, symbols = batch.state(), batch.symbols()
    for i in settled:
        assert np.array_equal(state[i], states[len(changing[i])][i])
        logits = sess.run(["logits"], {"problem": x[i:i + 1], "state": states[30][i:i + 1]})[0]
        assert np.array_equal(symbols[i], logits[0].argmax(0))
        assert task.decode(symbols[i], parsed[i]) == task.answer(parsed[i])
    running = np.flatnonzero(got == budget)
    batch.keep(running)
    rest = batch.advance(np.full(len(running), 30, np.int64), 4)
    for row, i in enumerate(running):  # 4 more steps from wherever the row stood (it may have run on)
        if rest[row] < 4:
            assert np.array_equal(batch.state()[row], states[30][i])
    batch.close()
    engine.close()


@pytest.mark.parametrize("name", ENGINES)
def test_given_state_owned_cells_and_rings(tiny_onnx, name):
    """A batch that starts from a given state counts only the cells it owns; rings wrap."""
    step = load_step_model(tiny_onnx["addition"])
    engine = _engine(step, name)
    task = get_task("addition")
    rng = np.random.default_rng(3)
    x = np.stack([task.encode(task.parse(task.random_line(rng, 30))) for _ in range(3)])
    x = np.concatenate([x, np.zeros((3, x.shape[1], 1), np.float32)], axis=2)
    states, _ = _plain_steps(step, x, 6)
    owned = np.zeros((3, 1, x.shape[2]), np.float32)
    owned[:, :, 10:20] = 1
    batch = engine.start(x, states[2], owned)
    last = batch.advance(np.full(3, 4, np.int64), 4)
    for i in range(3):
        moved = [t for t in range(3, 7) if _changed(states, t, slice(10, 20))[i]]
        assert last[i] == (moved[-1] - 2 if moved else 0)
    assert np.array_equal(batch.state(), states[6])
    batch.close()
    engine.close()

    ring_step = load_step_model(tiny_onnx["rule110"])
    ring_engine = _engine(ring_step, name)
    rule110 = get_task("rule110")
    xr = np.stack([rule110.encode(rule110.parse(rule110.random_line(rng, 12, 4))) for _ in range(2)])
    ring_states = [np.zeros((2, ring_step.metadata.state_channels, 12), np.float32)]
    with torch.no_grad():  # the ring's reference: the PyTorch rule, which wraps by construction
        from sead.train.baseline import model_from_onnx

        model = model_from_onnx(ring_step)
        for _ in range(4):
            ring_states.append(model.step(torch.from_numpy(xr), torch.from_numpy(ring_states[-1])).numpy())
    batch = ring_engine.start(xr, wrap=True)
    batch.advance(np.full(2, 4, np.int64), 4)
    assert np.array_equal(batch.state(), ring_states[4])
    batch.close()
    ring_engine.close()


@pytest.mark.parametrize("name", ENGINES)
def test_tiled_solves_on_every_engine(tiny_onnx, name):
    """Long tapes cut into 8-cell tiles run through the engine exactly like the dense `ort` loop."""
    rng = np.random.default_rng(11)
    for task_name in ("addition", "rule110"):
        path = str(tiny_onnx[task_name])
        t = get_task(task_name)
        lines = [t.random_line(rng, n, 9) if task_name == "rule110" else t.random_line(rng, n) for n in (50, 90, 130)]
        cap = None if task_name == "rule110" else 30
        with Runtime(path, "ort", tile_from=10**9, self_test=False) as dense:
            want = dense.solve(lines, max_steps=cap)
        try:
            tiled = Runtime(path, _engine_factory(name), tile_from=40, tile=(8, 2), self_test=False)
        except EngineUnavailable as exc:
            pytest.skip(str(exc))
        with tiled:
            assert tiled.solve(lines, max_steps=cap) == want
