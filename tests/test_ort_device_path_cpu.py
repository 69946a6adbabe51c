"""The ort-cuda engine's path (layout cl, OrtValue buffers bound by IO binding, engine-owned slots
for repeating batch shapes, slot hand-back) run on the CPU provider, against the oracle and the
`ort` engine. CUDA graphs themselves need a GPU: bench/gpu_check.py covers them."""
import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from sead.runtime import Runtime  # noqa: E402
from sead.runtime.engines.ort import OrtEngine  # noqa: E402
from sead.runtime.tasks import get_task  # noqa: E402


def _runtime(model: str, max_batch_rows: int = 4096) -> Runtime:
    # one worker: batches in order, so the second batch of a shape finds the first's slot free
    return Runtime(model, lambda step: OrtEngine(step, "cpu", layout="cl", cuda_graphs=True, graph_rows=True),
                   max_batch_rows=max_batch_rows, workers=1)


def _lines(task_name: str, count: int, length: int, seed: int) -> list[str]:
    task, rng = get_task(task_name), np.random.default_rng(seed)
    return [task.random_line(rng, length, generations=7) for _ in range(count)]


@pytest.mark.parametrize("task_name", ["addition", "parity", "rule110", "multiplication"])
def test_device_path_matches_ort_and_the_oracle(task_name):
    task = get_task(task_name)
    size = (4, 9) if task_name == "multiplication" else (12, 70)
    lines = _lines(task_name, 40, size[0], 1) + _lines(task_name, 9, size[1], 2)
    with Runtime(task_name, "ort") as cpu:
        ref = cpu.solve(lines)
    with _runtime(task_name) as rt:
        for _ in range(2):  # the second pass runs on the slots the first pass's shapes earned
            got = rt.solve(lines)
            assert got == ref
            assert got.answers == [task.answer(task.parse(line)) for line in lines]
        assert rt.engine.graph_shapes  # shapes repeated, so they own slots now


def test_repeating_shapes_get_slots_that_later_batches_reuse():
    with _runtime("addition", max_batch_rows=16) as rt:  # 4 batches of one shape per solve
        e = rt.engine
        # long carry chains in half of each batch keep it running, on its slot, after the rest finished
        lines = [line if i % 2 else "9" * 16 + "+1" for i, line in enumerate(_lines("addition", 64, 16, 3))]
        first = rt.solve(lines)
        assert e.graph_shapes  # the first batch saw the shape, the second got a slot
        slots = dict(e._slots)
        assert slots  # the checks below are over these: none would pass them vacuously
        assert not any(slot.busy for slot in slots.values())  # handed back when their batches ended
        tensors = {key: dict(slot.tensors) for key, slot in slots.items()}
        task = get_task("addition")
        assert first.answers == [task.answer(task.parse(line)) for line in lines]
        assert rt.solve(lines) == first
        for key, slot in slots.items():  # the same buffers (so, on a GPU, the same captured graphs)
            assert all(slot.tensors[name] is value for name, value in tensors[key].items())
        assert {slot.graph_id(d) for slot in slots.values() for d in (0, 1)} == \
            {str(i) for i in range(1, 2 * len(slots) + 1)}  # two graph ids per slot, 0 left to ONNX Runtime


def test_a_busy_slot_is_not_shared():
    with _runtime("addition") as rt:
        e = rt.engine
        codes = np.zeros((3, 8), np.uint8)
        codes[:, :4] = 2
        first = e.start(codes)
        first.close()
        held = e.start(codes)  # the shape repeats: it takes the slot
        assert held.slot is not None
        other = e.start(codes)  # the slot is busy: private buffers
        assert other.slot is None
        held.close()
        other.close()
        assert not any(slot.busy for slot in e._slots.values())
