"""The runtime's public API and batching front (runtime/api.py, runtime/batching.py): futures and
coroutines, coalescing across callers, a bounded queue and bounded workers, early delivery,
close(), and the load-time self-test that keeps a model that fails its task from answering."""
import asyncio
import os
import threading

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from sead import Runtime  # noqa: E402
from sead.runtime.errors import InputError, ModelFileError, QueueFull, RuntimeClosed, SeadError  # noqa: E402
from sead.runtime.tasks import get_task  # noqa: E402

HOLD_SECONDS = 120  # a bound on each wait, so that a bug fails a test instead of hanging it


def _sums(lines):
    return [str(int(a) + int(b)) for a, b in (line.split("+") for line in lines)]


def test_submit_and_solve_async_give_results_in_input_order():
    rng = np.random.default_rng(0)
    task = get_task("addition")
    lines = [task.random_line(rng, int(n)) for n in rng.integers(1, 300, 200)]
    with Runtime("addition", "ort") as rt:
        future = rt.submit(lines)
        assert [r.answer for r in future.result()] == _sums(lines)
        got = asyncio.run(rt.solve_async(lines[:50]))
        assert [r.answer for r in got] == _sums(lines[:50])
        assert rt.submit([]).result() == []


def test_requests_from_many_threads_share_batches():
    """Single-problem requests from 32 threads are coalesced into one engine batch, and every
    caller gets its own answer. The batch is due when its bucket holds max_batch_cells (32 rows
    of 4 cells: a 2-digit sum, its leading cell and one of padding), never by the clock:
    max_wait_ms is far longer than any wait here."""
    batches = []
    with Runtime("addition", "ort", max_batch_cells=32 * 4, max_wait_ms=HOLD_SECONDS * 10_000, self_test=False) as rt:
        rt.add_batch_listener(lambda rows, cells: batches.append((rows, cells)))
        lines = [f"{10 + i}+{20 + 2 * i}" for i in range(32)]
        got, start = [None] * 32, threading.Barrier(32)

        def call(i):
            start.wait()
            got[i] = rt.submit([lines[i]]).result(HOLD_SECONDS)[0].answer

        threads = [threading.Thread(target=call, args=(i,)) for i in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert got == _sums(lines)
    assert batches == [(32, 32 * 4)]


def test_a_batch_that_never_fills_goes_after_max_wait_ms():
    """A lone problem in a bucket far from full is answered: the max_wait_ms timer lets it go."""
    with Runtime("addition", "ort", max_batch_cells=1 << 20, max_wait_ms=20, self_test=False) as rt:
        assert rt.submit(["40+2"]).result(HOLD_SECONDS)[0].answer == "42"


def test_a_short_request_is_not_held_behind_a_long_one(gate):
    """A short request is answered while a long tape is mid-run: one of the tape's tile windows
    is held at a gate, so the tape cannot finish before the short answer is in."""
    with Runtime("addition", gate.engine(), workers=2) as rt:
        long = rt.submit(["9" * 20_000 + "+1"])
        gate.wait_held()  # a worker is inside the long tape
        short = rt.submit(["99+1"]).result(HOLD_SECONDS)  # the other worker answers it
        assert short[0].answer == "100" and not long.done()
        gate.release.set()
        assert long.result(HOLD_SECONDS)[0].answer == "1" + "0" * 20_000


def test_the_queue_is_bounded_and_refuses_at_once():
    with Runtime("addition", "ort", max_queue_cells=12_000) as rt:
        first = rt.submit(["9" * 15_000 + "+1"])  # an empty queue takes any one request
        with pytest.raises(QueueFull, match="max_queue_cells"):
            rt.submit(["9" * 100 + "+1"])
        assert isinstance(QueueFull("x"), SeadError)
        first.result()
        assert rt.stats()["queued_cells"] == 0
        assert rt.submit(["9" * 10_000 + "+1"]).result()[0].converged  # room again


def _workers() -> set:
    return {t for t in threading.enumerate() if t.name.startswith("sead-worker")}


def test_workers_never_outnumber_cores():
    before = _workers()
    with Runtime("addition", "ort") as rt:
        workers = _workers() - before
        assert 1 <= len(workers) <= len(os.sched_getaffinity(0))
        assert [r.answer for r in rt.solve(["1+2"] * 5000)] == ["3"] * 5000
    assert not workers & _workers()  # close() joined them


def test_validation_happens_before_anything_is_queued():
    with Runtime("addition", "ort") as rt:
        with pytest.raises(InputError) as info:
            rt.submit(["1+1", "2+x"])
        assert info.value.line == 2 and rt.stats()["queued_problems"] == 0
        with pytest.raises(SeadError, match="max_steps"):
            rt.submit(["1+1"], max_steps=10**30)
        with pytest.raises(SeadError, match="max_steps"):
            rt.submit(["1+1"], max_steps=-1)
    with Runtime("rule110", "ort") as rt:
        with pytest.raises(InputError, match="generations"):
            rt.submit(["0110 5", "0110 50"], max_steps=10)
        assert [r.answer for r in rt.solve(["0110 5"], max_steps=5)] == [get_task("rule110").answer(
            get_task("rule110").parse("0110 5"))]


def test_close_finishes_work_then_refuses_calls():
    rt = Runtime("addition", "ort")
    pending = rt.submit(["9" * 5000 + "+1"])
    rt.close()
    assert pending.result()[0].converged  # close() let it finish
    for call in (lambda: rt.submit(["1+1"]), lambda: rt.solve(["1+1"])):
        with pytest.raises(RuntimeClosed):
            call()
    rt.close()  # idempotent


def test_a_model_that_fails_its_self_test_never_answers(tiny_onnx):
    """An untrained rule with valid addition metadata is refused at load: it cannot add."""
    before = _workers()
    with pytest.raises(ModelFileError, match="fails its self-test"):
        Runtime(str(tiny_onnx["addition"]), "ort")
    assert _workers() <= before  # the refused runtime released its workers


def test_cancel_drops_work_not_started(gate):
    """close(cancel=True) drops what waits and stops a tape mid-run: the one worker is held inside
    the running tape until close() has failed the waiting request; neither request finishes, and
    the engine ran a fraction of the running tape's 30,001 steps."""
    rt = Runtime("addition", gate.engine(), workers=1)
    running = rt.submit(["9" * 30_000 + "+1"])
    gate.wait_held()
    waiting = rt.submit(["1+1"] * 10 + ["9" * 20_000 + "+1"])
    waiting.add_done_callback(lambda _: gate.release.set())  # close() fails it; then the worker goes on
    rt.close(cancel=True)  # returns once the worker has stopped
    for future in (running, waiting):
        with pytest.raises(RuntimeClosed):
            future.result(timeout=0)
    assert gate.steps < 30_000


def test_invalid_lists_every_refused_line():
    with Runtime("rule110", "ort") as rt:
        errors = rt.invalid(["0110 5", "01x0", "0110 50", "", "1 3"], max_steps=10)
    assert [(e.line, e.reason.split(";")[0]) for e in errors] == [
        (2, "the tape has 'x' at position 3"), (3, "asks for 50 generations"), (4, "blank line")]


def test_split_by_part_names_each_parts_rows():
    from sead.runtime.loop import split_by_part
    offsets = np.array([0, 3, 3, 7, 9])  # parts of 3, 0, 4 and 2 rows
    rows = np.array([0, 2, 3, 6, 8])
    got = [(part, slots.tolist()) for part, slots in split_by_part(offsets, rows)]
    assert got == [(0, [0, 1]), (2, [2, 3]), (3, [4])]
    got = [(part, slots.tolist()) for part, slots in split_by_part(offsets, rows, np.array([1, 4]))]
    assert got == [(0, [1]), (3, [4])]
    one = [(part, slots.tolist()) for part, slots in split_by_part(np.array([0, 5]), np.array([1, 4]))]
    assert one == [(0, [0, 1])]
    assert split_by_part(offsets, rows, np.array([], np.int64)) == []
