"""One conformance test for every engine this machine has: the engine/batch protocol that the
loop relies on (advance with budgets, exact changed counts, symbols, keep), checked against a
plain step-by-step loop over the exported step in ONNX Runtime."""
import numpy as np
import pytest

from sead.runtime.errors import EngineUnavailable
from sead.runtime.solve import make_engine

pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from sead.export.exporter import export_checkpoint  # noqa: E402
from sead.runtime.model_file import load_step_model  # noqa: E402
from sead.runtime.tasks import get_task  # noqa: E402

ENGINES = ["ort", "ort-cuda-path-on-cpu", pytest.param("ort-cuda", marks=pytest.mark.gpu), pytest.param("trt", marks=pytest.mark.trt)]


@pytest.fixture(scope="module")
def step(tiny_checkpoints, tmp_path_factory):
    path, _ = export_checkpoint(tiny_checkpoints["addition"], tmp_path_factory.mktemp("conf") / "a.onnx")
    return load_step_model(path)


def _plain_steps(step, x, n):
    import onnxruntime as ort

    sess = ort.InferenceSession(step.proto.SerializeToString(), providers=["CPUExecutionProvider"])
    state = np.zeros((x.shape[0], step.metadata.state_channels, x.shape[2]), np.float32)
    states = [state]
    for _ in range(n):
        state = sess.run(["next_state"], {"problem": x, "state": state})[0]
        states.append(state)
    return states, sess


@pytest.mark.parametrize("empty_tail", [0, 1], ids=["full-rows", "rows-ending-empty"])  # CPU packs the latter
@pytest.mark.parametrize("name", ENGINES)
def test_engine_protocol(step, name, empty_tail):
    try:
        if name == "ort-cuda-path-on-cpu":  # ort-cuda's device-resident path, on the CPU provider
            from sead.runtime.engines.ort import OrtCudaEngine
            engine = OrtCudaEngine(step, (4,), device_type="cpu")
        else:
            engine = make_engine(step, name, k=4)
    except EngineUnavailable as exc:
        pytest.skip(str(exc))
    task = get_task("addition")
    rng = np.random.default_rng(0)
    parsed = [task.parse(task.random_line(rng, 20)) for _ in range(6)]
    x = np.stack([task.encode(p) for p in parsed])
    x = np.concatenate([x, np.zeros((6, x.shape[1], empty_tail), np.float32)], axis=2)
    states, sess = _plain_steps(step, x, 12)
    batch = engine.start(x)
    assert batch.size == 6
    # budgets 0..5: problem i may run min(i, 4) steps in this call. An engine may run a problem
    # past its budget (the loop clips the count and finishes that problem), so counts are checked
    # clipped, and states only where the whole call was within budget.
    counts = batch.advance(np.arange(6, dtype=np.float32), 4)
    for i in range(6):
        ran = min(i, 4)
        moved = sum(int(not np.array_equal(states[t + 1][i], states[t][i])) for t in range(ran))
        assert min(counts[i], ran) == moved
    symbols = batch.symbols()
    for i in (4, 5):
        logits = sess.run(["logits"], {"problem": x[i:i + 1], "state": states[4][i:i + 1]})[0]
        assert np.array_equal(symbols[i], logits[0].argmax(0))
    batch.keep(np.array([4, 5]))
    assert batch.size == 2
    batch.advance(np.full(2, 4, np.float32), 4)
    assert np.array_equal(batch.symbols()[1], sess.run(["logits"], {"problem": x[5:6], "state": states[8][5:6]})[0][0].argmax(0))
