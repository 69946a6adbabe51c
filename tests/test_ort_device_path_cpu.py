"""The ort-cuda engine's device-resident path (OrtValue buffers, IO bindings per K and ping-pong
direction, graph slots for repeating shapes, slot hand-back) run on the CPU provider, against the
oracle and the `ort` engine. CUDA graphs themselves need a GPU: bench/gpu_check.py covers them."""
import threading

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from sead.runtime.engines.ort import OrtCudaEngine  # noqa: E402
from sead.runtime import Runtime  # noqa: E402
from sead.runtime.loop import bucket_length  # noqa: E402
from sead.runtime.tasks import get_task  # noqa: E402


def _runtime(model: str, max_batch_rows: int = 4096, **engine_options) -> Runtime:
    # one worker, as the CPU engine's batches would otherwise run side by side and reorder slots
    return Runtime(model, lambda step: OrtCudaEngine(step, device_type="cpu", **engine_options),
                   max_batch_rows=max_batch_rows, workers=1)


def _lines(task_name: str, count: int, length: int, seed: int) -> list[str]:
    task, rng = get_task(task_name), np.random.default_rng(seed)
    if task_name == "rule110":
        return [task.random_line(rng, length, 7) for _ in range(count)]
    return [task.random_line(rng, length) for _ in range(count)]


@pytest.mark.parametrize("task_name", ["addition", "parity", "rule110"])
def test_device_path_matches_ort_and_the_oracle(task_name):
    task = get_task(task_name)
    lines = _lines(task_name, 40, 12, 1) + _lines(task_name, 9, 70, 2)
    ref = Runtime(task_name, "ort").solve(lines)
    rt = _runtime(task_name)
    for _ in range(2):  # the second pass runs on the graph slots the first pass's shapes earned
        got = rt.solve(lines)
        assert got == ref
        assert [r.answer for r in got] == [task.answer(task.parse(line)) for line in lines]
    assert rt.engine.graph_shapes  # shapes repeated, so they own slots now


def test_repeating_shapes_get_slots_that_later_batches_reuse():
    rt = _runtime("addition", max_batch_rows=16)  # 4 batches of one shape per solve
    e = rt.engine
    # long carry chains in half of each batch keep it running, on its slot, after the rest finished
    lines = [line if i % 2 else "9" * 16 + "+1" for i, line in enumerate(_lines("addition", 64, 16, 3))]
    first = rt.solve(lines)
    shape = (16, bucket_length(get_task("addition").parse(lines[0]).length), False)
    assert shape in e.graph_shapes  # the first batch saw the shape, the second got a slot
    slot = e._slots[shape]
    assert not slot.busy  # handed back when its batch ended
    bindings = dict(slot.bindings)
    task = get_task("addition")
    assert [r.answer for r in first] == [task.answer(task.parse(line)) for line in lines]
    assert rt.solve(lines) == first
    assert all(slot.bindings[key] is bindings[key] for key in bindings)  # same bindings, replayed
    assert {run_options.get_run_config_entry("gpu_graph_id") for _, _, run_options, _ in slot.bindings.values()} \
        == {"1", "2"}  # one graph id per ping-pong direction


def test_below_a_quarter_live_a_slot_batch_compacts_for_real():
    rt = _runtime("addition", max_batch_rows=16)
    # sums without a carry settle within the first call; the carry chains outlive it
    rng = np.random.default_rng(6)
    no_carry = ["".join(map(str, rng.integers(1, 5, 16))) + "+" + "".join(map(str, rng.integers(0, 5, 16)))
                for _ in range(64)]
    lines = [line if i % 8 else "9" * 16 + "+1" for i, line in enumerate(no_carry)]
    task = get_task("addition")
    for _ in range(2):
        assert [r.answer for r in rt.solve(lines)] == [task.answer(task.parse(line)) for line in lines]
    slot = rt.engine._slots[(16, 18, False)]
    # 2 of 16 rows were live after the first call: they left the slot for a (2, 18) batch
    assert {key[1] for key in slot.bindings} == {0}


def test_a_busy_slot_is_not_shared_and_caps_hold():
    e = _runtime("addition").engine
    x = np.zeros((4, e.step.metadata.input_channels, 9), np.float32)
    a = e.start(x)  # first sight: private buffers
    a.close()
    b, c = e.start(x), e.start(x)  # second sight: b takes the slot, c runs on private buffers
    assert b.buffers is e._slots[(4, 9, False)] and c.buffers is not b.buffers and c.buffers.graph_ids is None
    b.close()
    assert e.start(x).buffers is e._slots[(4, 9, False)]
    big = np.zeros((1, e.step.metadata.input_channels, e.GRAPH_MAX_CELLS + 1), np.float32)
    for _ in range(3):
        e.start(big).close()
    assert (1, e.GRAPH_MAX_CELLS + 1, False) not in e.graph_shapes
    for n in range(2 * e.GRAPH_SLOTS):
        for _ in range(2):
            e.start(np.zeros((n + 1, e.step.metadata.input_channels, 5), np.float32)).close()
    assert len(e.graph_shapes) == e.GRAPH_SLOTS


def test_without_graphs_no_slots():
    rt = _runtime("addition", max_batch_rows=8, cuda_graphs=False)
    lines = _lines("addition", 32, 10, 4)
    assert rt.solve(lines) == Runtime("addition", "ort").solve(lines)
    assert rt.engine.graph_shapes == []


def test_concurrent_callers_on_the_device_path():
    rt = _runtime("addition", max_batch_rows=8)
    task = get_task("addition")
    jobs = [_lines("addition", 24, 6 + i % 3, 10 + i) for i in range(8)]
    errors = []

    def work(lines):
        try:
            got = rt.solve(lines)
            assert [r.answer for r in got] == [task.answer(task.parse(line)) for line in lines]
        except Exception as exc:  # surfaced below: an assert in a thread would be lost
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(lines,)) for lines in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert not any(slot.busy for slot in rt.engine._slots.values())


def test_a_failed_graph_turns_graphs_off_and_the_call_reruns(monkeypatch, capsys):
    """ONNX Runtime refusing a capture or replay (simulated: the graph session raises) must cost
    nothing but the graphs: the call reruns on the plain session, answers stay exact."""
    rt = _runtime("addition", max_batch_rows=16)
    e = rt.engine
    real = e.advance_session

    class RefusingGraphSession:
        def __init__(self, session):
            self.session = session

        def io_binding(self):
            return self.session.io_binding()

        def run_with_iobinding(self, binding, run_options=None):
            raise RuntimeError("CUDA graph capture failed (simulated)")

    monkeypatch.setattr(e, "advance_session", lambda k, wrap, graphs: RefusingGraphSession(real(k, wrap, graphs))
                        if graphs else real(k, wrap, graphs))
    lines = [line if i % 8 else "9" * 16 + "+1" for i, line in enumerate(_lines("addition", 48, 16, 5))]
    want = Runtime("addition", "ort").solve(lines)
    assert rt.solve(lines) == want  # the second batch got a slot, its graph run failed, it reran
    assert not e.cuda_graphs and "CUDA graphs unavailable" in capsys.readouterr().err
    assert rt.solve(lines) == want  # and later solves never try graphs again


def test_the_gpu_check_script_runs_end_to_end_on_the_cpu_stand_in(tmp_path):
    """bench/gpu_check.py is what a GPU session will run, once, on scarce device time: its own
    logic (loading, both passes, comparisons, throughput, report) is exercised here."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"
    proc = subprocess.run([sys.executable, str(script), "--quick", "--cpu-stand-in", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["cpu_stand_in"] and [m["task"] for m in report["models"]] == ["addition", "parity", "rule110"]
    for model in report["models"]:
        for case in model["cases"]:
            for name in ("ort-cuda", "ort-cuda-nographs"):
                entry = case["engines"][name]
                assert entry["identical"] and entry["second_pass"]["identical"], (model["task"], case["label"], name)
    throughput = report["models"][0]["throughput"]
    assert all(row["engines"]["ort-cuda"]["identical"] for row in throughput)
    assert report["models"][0]["engines"]["ort-cuda"]["graph_shapes"]  # slots were used
