"""A lone long tape on the CPU engine runs in windows, one core each, with halos re-cut from the
stitched tape after every call. Windows must change nothing but the speed: same answers, same
step counts, same converged flags as one unwindowed tape, and the oracle's answers."""
import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from sead.runtime.engines.ort import OrtCpuEngine, OrtCpuWindowedBatch  # noqa: E402
from sead.runtime.solve import Runtime  # noqa: E402
from sead.runtime.tasks import get_task  # noqa: E402


def _runtimes(model: str, cores: int, window_min: int):
    windowed, plain = Runtime(model, "ort"), Runtime(model, "ort")
    windowed.engine = OrtCpuEngine(windowed.step, cores=cores)
    windowed.engine.WINDOW_MIN_CELLS = window_min
    plain.engine = OrtCpuEngine(plain.step)
    plain.engine.WINDOW_MIN_CELLS = 1 << 62  # never windows
    return windowed, plain


@pytest.mark.parametrize("cores,window_cells", [(2, 1 << 13), (3, 1 << 13), (5, 1 << 13), (2, 40)])
def test_windows_agree_with_one_tape_and_the_oracle(cores, window_cells, monkeypatch):
    monkeypatch.setattr(OrtCpuWindowedBatch, "WINDOW_CELLS", window_cells)  # 40: more windows than cores
    task = get_task("addition")
    windowed, plain = _runtimes("addition", cores, 1)
    rng = np.random.default_rng(cores)
    lines = [task.random_line(rng, 300), "9" * 299 + "+1",  # a carry crosses every window boundary
             "1" + "0" * 200 + "+" + "9" * 201, "5" * 150 + "4" * 140 + "+" + "4" * 150 + "6" * 140]
    for line in lines:
        got, want = windowed.solve([line]), plain.solve([line])
        assert got == want
        assert got[0].converged and got[0].answer == task.answer(task.parse(line))
    starts = []
    real_start = windowed.engine.start
    windowed.engine.start = lambda x, exclusive=False: starts.append(real_start(x, exclusive)) or starts[-1]
    windowed.solve([lines[1]])
    batch = starts[0]
    assert isinstance(batch, OrtCpuWindowedBatch)
    assert len(batch.windows) == (cores if window_cells > 300 else 8)  # 300 cells: 8 windows of 40


def test_windows_on_parity_and_under_a_cap():
    task = get_task("parity")
    windowed, plain = _runtimes("parity", 2, 1)
    rng = np.random.default_rng(0)
    lines = [task.random_line(rng, 400), "1" + "0" * 399]
    for line in lines:
        assert windowed.solve([line]) == plain.solve([line])
        assert windowed.solve([line])[0].answer == task.answer(task.parse(line))
    # a cap that is not a multiple of the steps per call: not converged, no answer, same steps
    for cap in (5, 37):
        got = windowed.solve([lines[1]], max_steps=cap)
        assert got == plain.solve([lines[1]], max_steps=cap)
        assert got[0].steps == cap and not got[0].converged and got[0].answer is None


def test_windows_only_for_long_tapes_one_per_batch():
    windowed, _ = _runtimes("addition", 2, 1000)
    e = windowed.engine
    c = e.step.metadata.input_channels
    assert isinstance(e.start(np.zeros((1, c, 1000), np.float32)), OrtCpuWindowedBatch)
    assert not isinstance(e.start(np.zeros((1, c, 999), np.float32)), OrtCpuWindowedBatch)
    assert e.max_rows(1000) == 1 and e.max_rows(999) > 4096  # a long tape gets a batch of its own


@pytest.mark.parametrize("window_cells", [1 << 13, 50])
def test_windows_on_rings_wrap_and_run_exact_generations(window_cells, monkeypatch):
    """rule110 rings: halos wrap around the ring's end, and every call runs exactly the steps
    the budget allows (the answer is the state after exactly N generations)."""
    monkeypatch.setattr(OrtCpuWindowedBatch, "WINDOW_CELLS", window_cells)
    task = get_task("rule110")
    windowed, plain = _runtimes("rule110", 2, 100)
    rng = np.random.default_rng(4)
    lines = [task.random_line(rng, n, g) for n, g in ((300, 7), (257, 64), (333, 65), (120, 130), (101, 1))]
    got = windowed.solve(lines)
    assert got == plain.solve(lines)
    assert [r.answer for r in got] == [task.answer(task.parse(line)) for line in lines]
    assert [r.steps for r in got] == [7, 64, 65, 130, 1]


def test_several_long_tapes_share_the_window_pool():
    task = get_task("addition")
    windowed, plain = _runtimes("addition", 2, 200)
    rng = np.random.default_rng(9)
    lines = [task.random_line(rng, n) for n in (150, 260, 310, 20, 400)] + ["9" * 250 + "+1"]
    got = windowed.solve(lines)
    assert got == plain.solve(lines)
    assert [r.answer for r in got] == [task.answer(task.parse(line)) for line in lines]


def test_the_halo_follows_the_deepest_k():
    task = get_task("addition")
    rt = Runtime("addition", "ort", k=100)  # a fixed K past the default deepest (64)
    rt.engine.WINDOW_MIN_CELLS = 1
    line = "9" * 300 + "+1"
    got = rt.solve([line])
    assert isinstance(rt.engine.start(np.zeros((1, 20, 302), np.float32)), OrtCpuWindowedBatch)
    assert got == Runtime("addition", "ort").solve([line])
    assert got[0].answer == task.answer(task.parse(line))


def test_concurrent_callers_with_long_tapes_share_the_window_pool():
    import threading

    task = get_task("addition")
    windowed, plain = _runtimes("addition", 2, 100)
    rng = np.random.default_rng(11)
    jobs = [[task.random_line(rng, n) for n in (60 + 40 * i, 5, 150)] + ["9" * (100 + 30 * i) + "+1"] for i in range(6)]
    want = [plain.solve(lines) for lines in jobs]
    got, errors = [None] * len(jobs), []

    def work(i):
        try:
            got[i] = windowed.solve(jobs[i])
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads)
    assert got == want
