"""The runtime's public API and batching front (runtime/api.py, runtime/batching.py): futures and
coroutines, coalescing across callers, a bounded queue and bounded workers, early delivery,
close(), and the load-time self-test that keeps a model that fails its task from answering."""
import asyncio
import os
import threading
import time

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from sead import Runtime  # noqa: E402
from sead.runtime.errors import InputError, ModelFileError, QueueFull, RuntimeClosed, SeadError  # noqa: E402
from sead.runtime.tasks import get_task  # noqa: E402


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
    """With max_wait_ms, single-problem requests from 32 threads are coalesced into far fewer
    engine batches than requests, and every caller gets its own answer."""
    batches = []
    with Runtime("addition", "ort", max_wait_ms=50) as rt:
        rt.add_batch_listener(lambda rows, cells: batches.append(rows))
        lines = [f"{i}+{2 * i}" for i in range(32)]
        got, start = [None] * 32, threading.Barrier(32)

        def call(i):
            start.wait()
            got[i] = rt.solve([lines[i]])[0].answer

        threads = [threading.Thread(target=call, args=(i,)) for i in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert got == _sums(lines)
    assert sum(batches) == 32 and len(batches) < 16


def test_a_short_request_is_not_held_behind_a_long_one():
    with Runtime("addition", "ort") as rt:
        long = rt.submit(["9" * 20_000 + "+1"])
        time.sleep(0.2)  # the long tape is running
        start = time.perf_counter()
        short = rt.submit(["99+1"]).result()
        waited = time.perf_counter() - start
        assert short[0].answer == "100" and not long.done() and waited < 2.0
        assert long.result()[0].answer == "1" + "0" * 20_000


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


def test_cancel_drops_work_not_started():
    rt = Runtime("addition", "ort", workers=1)
    running = rt.submit(["9" * 30_000 + "+1"])
    time.sleep(0.3)
    waiting = rt.submit(["1+1"] * 10 + ["9" * 20_000 + "+1"])
    start = time.perf_counter()
    rt.close(cancel=True)
    assert time.perf_counter() - start < 2.0  # no waiting for the long tapes to finish
    for future in (running, waiting):
        with pytest.raises(RuntimeClosed):
            future.result()


def test_invalid_lists_every_refused_line():
    with Runtime("rule110", "ort") as rt:
        errors = rt.invalid(["0110 5", "01x0", "0110 50", "", "1 3"], max_steps=10)
    assert [(e.line, e.reason.split(";")[0]) for e in errors] == [
        (2, "the tape has 'x' at position 3"), (3, "asks for 50 generations"), (4, "blank line")]
