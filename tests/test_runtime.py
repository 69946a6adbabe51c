"""The convergence loop above the engines: freezing, per-problem steps, the cap, ordering,
concurrency, bad input, and agreement with the PyTorch reference loop."""
import threading

import numpy as np
import pytest

from sead.runtime.errors import InputError, ModelFileError, SeadError
from sead.runtime import Runtime
from sead.runtime.loop import bucket_length
from sead.runtime.tasks import get_task

torch = pytest.importorskip("torch")



@pytest.mark.parametrize("task", ["addition", "parity", "rule110"])
def test_runtime_matches_torch_reference_loop(tiny_checkpoints, tiny_onnx, task, reference):
    """Answers, step counts and converged flags equal the reference, whatever the (untrained)
    rule does: padding, batching, K-step chunks and compaction must not change any of them."""
    rng = np.random.default_rng(0)
    t = get_task(task)
    lines = []
    for n in [1, 2, 3, 5, 16, 17, 40, 100, 300]:
        for _ in range(3):
            lines.append(t.random_line(rng, n, int(rng.integers(0, 30))) if task == "rule110" else t.random_line(rng, n))
    rng.shuffle(lines)
    for cap in (None, 3):
        if task == "rule110" and cap is not None:
            continue
        got = Runtime(str(tiny_onnx[task]), engine="ort", k=4, max_batch_rows=5, self_test=False).solve(lines, max_steps=cap)
        want = reference(tiny_checkpoints[task], lines, cap)
        assert [(r.answer, r.steps, r.converged) for r in got] == want


def test_cap_reports_not_converged_without_an_answer(tiny_onnx):
    rt = Runtime(str(tiny_onnx["parity"]), engine="ort", self_test=False)
    results = rt.solve(["0110", "1"], max_steps=0)
    assert all(not r.converged and r.answer is None and r.steps == 0 for r in results)


def test_rule110_runs_exactly_its_generations(tiny_onnx):
    rt = Runtime(str(tiny_onnx["rule110"]), engine="ort", k=8, self_test=False)
    results = rt.solve(["0110 0", "0110 1", "0110 7", "0110 8", "0110 9", "01101 17"])
    assert [r.steps for r in results] == [0, 1, 7, 8, 9, 17]
    assert all(r.converged for r in results)


def test_results_keep_input_order_across_buckets(tiny_onnx):
    rt = Runtime(str(tiny_onnx["addition"]), engine="ort", max_batch_rows=2, self_test=False)
    lines = ["1" * n + "+1" for n in (300, 1, 40, 2, 300, 17)]
    batched = rt.solve(lines)
    single = [rt.solve([line])[0] for line in lines]
    assert batched == single


def test_concurrent_callers_share_one_runtime(tiny_onnx):
    rt = Runtime(str(tiny_onnx["addition"]), engine="ort", self_test=False)
    rng = np.random.default_rng(1)
    task = get_task("addition")
    work = [[task.random_line(rng, int(rng.integers(1, 60))) for _ in range(40)] for _ in range(8)]
    expected = [rt.solve(lines) for lines in work]
    got, errors = [None] * 8, []

    def worker(i):
        try:
            for _ in range(3):
                got[i] = rt.solve(work[i])
                assert got[i] == expected[i]
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors and got == expected


def test_bad_input_names_the_line(tiny_onnx):
    rt = Runtime(str(tiny_onnx["addition"]), engine="ort", self_test=False)
    with pytest.raises(InputError) as err:
        rt.solve(["1+1", "2+2", "3+x"])
    assert err.value.line == 3 and "'x'" in str(err.value)
    with pytest.raises(InputError, match="blank line"):
        list(rt.stream(["1+1", ""]))


def test_stream_solves_in_chunks_in_order(tiny_onnx):
    rt = Runtime(str(tiny_onnx["addition"]), engine="ort", self_test=False)
    lines = [f"{i}+{i}" for i in range(1000)]
    streamed = list(rt.stream(iter(lines), chunk=64))
    assert [n for n, _ in streamed] == list(range(1, len(lines) + 1))
    assert [r for _, r in streamed] == rt.solve(lines)


def test_missing_model_and_unknown_engine(tiny_onnx, tmp_path):
    with pytest.raises(ModelFileError, match="no such model file"):
        Runtime(str(tmp_path / "nope.onnx"))
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all \x00\xff")
    with pytest.raises(ModelFileError):
        Runtime(str(tmp_path / "junk.onnx"))
    with pytest.raises(SeadError, match="unknown engine"):
        Runtime(str(tiny_onnx["addition"]), engine="cuda-magic", self_test=False)


def test_bucket_lengths_leave_an_empty_cell_and_little_waste():
    assert bucket_length(1) == 2 and bucket_length(17) == 18
    for n in range(1, 5000):
        b = bucket_length(n)
        assert n < b <= max(n + 1, n * 1.07)
    assert bucket_length(10**6 + 1) <= (10**6 + 1) * 1.07


def test_stream_blocks_answers_blocks_in_order_with_their_invalid_lines(tiny_onnx):
    rt = Runtime(str(tiny_onnx["addition"]), engine="ort", self_test=False)
    blocks = [[f"{i}+{i}" for i in range(5)], [], ["1+x", "2+2"], [f"{i}+1" for i in range(200)]]
    answered = list(rt.stream_blocks(iter(blocks), skip_invalid=True, first_line=10, chunk=64))
    assert [(a.first, a.count) for a in answered] == [(10, 5), (15, 2), (17, 64), (81, 64), (145, 64), (209, 8)]
    assert list(answered[1].errors) == [0] and answered[1].errors[0].line == 15
    lines = [line for block in blocks for line in block]
    items = [item for a in answered for item in a.items()]
    assert [n for n, _ in items] == list(range(10, 10 + len(lines)))
    valid = [line for line in lines if line != "1+x"]
    assert [r for _, r in items if not isinstance(r, InputError)] == rt.solve(valid)
    with pytest.raises(InputError, match="'x'"):
        list(rt.stream_blocks(iter(blocks)))


def test_stream_reads_ahead_until_every_worker_has_batches_to_run(tiny_onnx):
    """Two blocks ahead on a CPU's small batches; on batches of a GPU's size, enough blocks to fill
    them: the engine never waits for the reader."""
    def blocks_read_before_the_first_answer(rt):
        read = []
        blocks = ([f"{i}+{j}" for j in range(100)] for i in range(1000) if not read.append(i))
        next(rt.stream_blocks(blocks))
        return len(read)

    with Runtime(str(tiny_onnx["addition"]), engine="ort", self_test=False, workers=2, max_batch_cells=64) as rt:
        assert blocks_read_before_the_first_answer(rt) == 2
    with Runtime(str(tiny_onnx["addition"]), engine="ort", self_test=False, workers=2, max_batch_cells=4096) as rt:
        # 100 lines of at most 5 cells a block: 2 x 4,096 x 2 cells ahead take more than 32 blocks
        assert 32 < blocks_read_before_the_first_answer(rt) < 1000
