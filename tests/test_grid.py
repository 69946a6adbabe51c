"""Grids (rank 2): the multiplication task's codec, and a 2-D rule through export, the ONNX
checks and the runtime, against the PyTorch reference loop. No trained 2-D model ships yet, so
the rules here are untrained: random weights give arbitrary dynamics, which is what an
exactness check of the pipeline needs (answers, steps and converged flags must all agree)."""
import numpy as np
import pytest

from sead.runtime.errors import InputError
from sead.runtime.tasks import get_task
from sead.runtime.tasks.multiplication import csa_digits

MUL = get_task("multiplication")


def test_the_oracle_is_pythons_product():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a, b = (int(rng.integers(0, 10 ** int(rng.integers(1, 19)))) for _ in range(2))
        assert MUL.answer(MUL.parse(f"{a}*{b}")) == str(a * b)
    assert MUL.answer(MUL.parse("007*0")) == "0" and MUL.answer(MUL.parse(" 12 * 034 ")) == "408"


@pytest.mark.parametrize("line, words", [("12", "one '*'"), ("1*2*3", "one '*'"), ("1a*2", "first operand"),
                                         ("12*", "second operand"), ("", "blank line")])
def test_bad_lines_are_refused(line, words):
    with pytest.raises(InputError, match=words):
        MUL.parse(line)


def test_the_layout_is_local_a_carry_save_array_reads_every_product_off_the_edge():
    """The grid's layout admits a 3x3 rule: the carry-save automaton (the training targets'
    source) settles within n_a + n_b steps and its edge reads the exact product."""
    rng = np.random.default_rng(1)
    for _ in range(150):
        na, nb = (int(n) for n in rng.integers(1, 31, 2))
        a, b = "".join(map(str, rng.integers(0, 10, na))), "".join(map(str, rng.integers(0, 10, nb)))
        p = MUL.parse(f"{a}*{b}")
        digits = csa_digits(a, b)
        assert digits.shape == MUL.shape(p) == (na + 1, nb)
        assert MUL.decode(digits, p) == str(int(a) * int(b))


def test_cells_are_encoded_where_their_partial_products_live():
    p = MUL.parse("12*345")  # a = 2, 1 (low first); b = 5, 4, 3
    x = MUL.encode(p)
    assert x.shape == (MUL.input_channels, 3, 3) and x[0].sum() == 9  # 2 rows of products + the margin row
    symbols = x[1:].argmax(0)
    from sead.runtime.tasks.multiplication import PRODUCTS
    assert [PRODUCTS[s] for s in symbols[0]] == [10, 8, 6] and [PRODUCTS[s] for s in symbols[1]] == [5, 4, 3]
    assert (x[-1, 2] == 1).all()  # the margin row's channel
    padded = MUL.encode_many([p], (4, 5))
    assert padded.shape == (1, MUL.input_channels, 4, 5) and padded[0, 0].sum() == 9


LINES = ["1*1", "9*9", "12*34", "999*1", "7*123456", "0*0", "123456*654321", "31415*92653", "5*5", "88*11"]


@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("model", ["multiplication", "multiplication_symbol", "multiplication_digits"])
def test_a_grid_rule_runs_in_the_runtime_as_in_pytorch(model, k, tiny_onnx, tiny_checkpoints, reference):
    from sead.runtime import Runtime

    want = reference(tiny_checkpoints[model], LINES, 12)
    assert len({s for _, s, _ in want}) >= 3 and {c for _, _, c in want} == {True, False}  # varied dynamics
    with Runtime(str(tiny_onnx[model]), "ort", k=k, self_test=False) as rt:
        got = rt.solve(LINES, max_steps=12)
        assert [(r.answer, r.steps, r.converged) for r in got] == want
        assert [(r.answer, r.steps, r.converged) for r in rt.solve(LINES[:3], max_steps=12)] == want[:3]


def test_no_call_holds_a_tensor_of_2_31_elements(tiny_onnx):
    """The engine bounds rows by its widest tensor (the cl layout gathers taps x hidden values per
    cell); a grid too large for one call is refused before anything runs."""
    from sead.runtime.engines.ort import MAX_ELEMENTS, OrtEngine
    from sead.runtime.model_file import load_step_model

    engine = OrtEngine(load_step_model(tiny_onnx["multiplication_symbol"]), "cpu")
    for cells in (1, 1000, 40_000, 1 << 20):
        assert engine.max_rows(cells) * cells * engine.elements_per_cell <= MAX_ELEMENTS
    assert engine.elements_per_cell >= 9 * engine.rule.hidden


@pytest.mark.parametrize("model", ["multiplication", "multiplication_symbol"])
def test_the_device_resident_path_runs_grids(model, tiny_onnx, tiny_checkpoints, reference):
    from sead.runtime import Runtime
    from sead.runtime.engines.ort import OrtEngine

    want = reference(tiny_checkpoints[model], LINES, 12)
    engine = lambda step: OrtEngine(step, "cpu", layout="cl", cuda_graphs=True, graph_rows=True)
    with Runtime(str(tiny_onnx[model]), engine, self_test=False, workers=1) as rt:
        for _ in range(2):  # the second pass runs on the graph slots the first pass's shapes earned
            assert [(r.answer, r.steps, r.converged) for r in rt.solve(LINES * 2, max_steps=12)] == want * 2


def test_the_exported_grid_step_says_its_rank(tiny_onnx):
    from sead.runtime.model_file import load_step_model

    step = load_step_model(tiny_onnx["multiplication"])
    assert step.metadata.rank == 2 and step.metadata.task == "multiplication" and step.metadata.format_version == 4
    dims = [len(v.type.tensor_type.shape.dim) for v in step.proto.graph.input]
    assert dims == [4, 4]


def _version_1(task: str = "rule110"):
    """The shipped rule as a version-1 file: without the metadata keys later versions added."""
    import onnx

    from sead.runtime.model_file import ADDED, default_model_path

    proto = onnx.load(str(default_model_path(task)))
    props = {p.key: p.value for p in proto.metadata_props if p.key.removeprefix("sead.") not in ADDED}
    onnx.helper.set_model_props(proto, {**props, "sead.format_version": "1"})
    return proto


def test_a_tape_model_relabelled_as_a_grid_is_refused(tmp_path):
    import onnx

    from sead.runtime.errors import ModelFileError
    from sead.runtime.model_file import load_step_model

    proto = _version_1()
    props = {p.key: p.value for p in proto.metadata_props}
    onnx.helper.set_model_props(proto, {**props, "sead.format_version": "2", "sead.rank": "2"})
    path = tmp_path / "grid.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(ModelFileError, match=r"must be a \(B, C, H, W\) float32 tensor \(sead.rank=2\)"):
        load_step_model(path)


def test_a_grid_bigger_than_the_engine_row_is_refused_before_anything_runs(tiny_onnx):
    from sead.runtime import Runtime
    from sead.runtime.errors import SeadError

    with Runtime(str(tiny_onnx["multiplication"]), "ort", self_test=False) as rt:
        rt.engine.max_row_cells = 100
        with pytest.raises(SeadError, match="more than engine 'ort' takes in one row"):
            rt.solve(["1*1", "1" * 20 + "*" + "2" * 20])


def test_a_grid_rule_trains_and_is_measured_like_a_tape():
    """The recipe's loop, mining and evaluation run unchanged on grids: the loss falls on a fixed
    batch, and `sead eval`'s measures come out per operand length."""
    torch = pytest.importorskip("torch")
    from sead.train.data import due_batch, encode_batch, sample_lines
    from sead.train.evaluate import evaluate
    from sead.train.loop import TrainConfig, build_model, fixed_point_loss, train

    cfg = TrainConfig(task="multiplication", steps=80, lr=1e-2, max_len=3, hidden=16, readout_hidden=16,
                      mine_every=20, mine_count=256, batch_size=64, max_minutes=30)
    parsed = [MUL.parse(line) for line in sample_lines("multiplication", np.random.default_rng(2), 128, max_len=3)]
    x, y, _ = encode_batch("multiplication", parsed)
    due = due_batch("multiplication", parsed, tuple(y.shape[1:]))
    assert x.shape[2:] == y.shape[1:] and x.dim() == 4

    def loss_of(model):
        with torch.no_grad():
            return float(fixed_point_loss(model, x, y, due, cfg, cfg.extra_steps)[0])

    torch.manual_seed(cfg.seed)
    before = loss_of(build_model(cfg))
    model, record = train(cfg, log=False)
    assert loss_of(model) < 0.9 * before
    assert record["parameters"] == model.num_parameters()
    assert all(0 <= h["short_accuracy"] <= 1 for h in record["history"] if h["short_accuracy"] == h["short_accuracy"])
    rows = evaluate(model, lengths=(2, 4), max_problems=8)
    assert {row.length for row in rows} == {2, 4} and all(0 <= row.exact <= row.problems for row in rows)


@pytest.mark.parametrize("props, words", [
    ({}, None),  # a version-1 file loads as rank 1
    ({"sead.rank": "1"}, "unknown sead metadata keys ['rank']"),  # version 1 has no rank
    ({"sead.format_version": "2"}, "lacks ['rank']"),
    ({"sead.format_version": "2", "sead.rank": "1"}, None),
    ({"sead.format_version": "2", "sead.rank": "1", "sead.state": "sign"}, "unknown sead metadata keys ['state']"),
    ({"sead.format_version": "3", "sead.rank": "1"}, "lacks ['state']"),  # version 3 says its state's code
    ({"sead.format_version": "3", "sead.rank": "1", "sead.state": "sign"}, None),
    ({"sead.format_version": "3", "sead.rank": "1", "sead.state": "spin"}, "sead.state='spin'; sead knows sign, symbol"),
    ({"sead.format_version": "3", "sead.rank": "1", "sead.state": "sign", "sead.verified_size": "9"},
     "unknown sead metadata keys ['verified_size']"),
    ({"sead.format_version": "4", "sead.rank": "1", "sead.state": "sign"}, "lacks ['verified_size']"),
    ({"sead.format_version": "4", "sead.rank": "1", "sead.state": "sign", "sead.verified_size": "0"}, None),
    ({"sead.format_version": "4", "sead.rank": "1", "sead.state": "sign", "sead.verified_size": "-1"},
     "sead.verified_size=-1; a size limit is 0 (none) or more"),
    ({"sead.format_version": "4", "sead.rank": "1", "sead.state": "sign", "sead.verified_size": "x"}, "bad sead metadata"),
    ({"sead.format_version": "5", "sead.rank": "1"}, "format version '5' is not supported (this sead reads versions 1, 2, 3, 4)"),
])
def test_metadata_versions(tmp_path, props, words):
    import onnx

    from sead.runtime.errors import ModelFileError
    from sead.runtime.model_file import load_step_model

    proto = _version_1()
    old = {p.key: p.value for p in proto.metadata_props}
    assert old["sead.format_version"] == "1" and "sead.rank" not in old
    onnx.helper.set_model_props(proto, {**old, **props})
    path = tmp_path / "m.onnx"
    onnx.save(proto, str(path))
    if words is None:
        meta = load_step_model(path).metadata
        assert meta.rank == 1 and meta.state == "sign" and meta.verified_size == 0  # older files: sign states, no limit
    else:
        with pytest.raises(ModelFileError) as info:
            load_step_model(path)
        assert words in str(info.value)


def test_each_cell_is_due_when_the_carry_save_array_settles_it():
    """Multiplication's per-cell due steps (training deadlines) are when the carry-save array,
    run from the zero state, gives each cell its final (s, c) for good: so a 3x3 rule can meet them."""
    from sead.runtime.tasks.multiplication import csa_state

    rng = np.random.default_rng(4)
    for _ in range(40):
        na, nb = (int(n) for n in rng.integers(1, 9, 2))
        a, b = "".join(map(str, rng.integers(0, 10, na))), "".join(map(str, rng.integers(0, 10, nb)))
        p = MUL.parse(f"{a}*{b}")
        due = MUL.due_steps(p)
        final = np.stack(csa_state(a, b))
        da, db = (np.array([int(ch) for ch in reversed(t)]) for t in (a, b))
        s = np.zeros((na + 1, nb), np.int64)
        c = np.zeros_like(s)
        for step in range(1, na + nb + 1):  # the array's synchronous steps, as csa_state runs them
            up_right, up = np.zeros_like(s), np.zeros_like(c)
            up_right[1:, :-1], up[1:] = s[:-1, 1:], c[:-1]
            total = up_right + up
            total[:na] += np.outer(da, db)
            total[na, 1:] += c[na, :-1]
            s, c = total % 10, total // 10
            settled = (np.stack([s, c]) == final).all(0)
            assert settled[due <= step].all()
        assert due.max() == na + nb == MUL.due_step(p) - 1


def test_deadline_loss_judges_cells_that_cannot_copy_their_own_state():
    """The deadline loss is near zero for a rule that gives every cell its answer, and large for
    one that keeps each cell's own state (judged cells start from noise) or one that leaves an
    answer once it holds it (cells past their deadline must keep it)."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    from sead.train.data import due_batch, encode_batch, sample_lines
    from sead.train.loop import TrainConfig, build_model, deadline_loss

    parsed = [MUL.parse(line) for line in sample_lines("multiplication", np.random.default_rng(3), 64, max_len=6)]
    x, y, _ = encode_batch("multiplication", parsed)
    due = due_batch("multiplication", parsed, tuple(y.shape[1:]))
    model = build_model(TrainConfig(task="multiplication", hidden=4, state="symbol"))
    answers = F.one_hot(y.clamp(min=0), 100).movedim(-1, 1).float() * 50
    model.preactivation = lambda problem, state: answers
    assert float(deadline_loss(model, x, y, due, torch.Generator().manual_seed(0))) < 1e-6
    model.preactivation = lambda problem, state: state * 50
    assert float(deadline_loss(model, x, y, due, torch.Generator().manual_seed(0))) > 5
    model.preactivation = lambda problem, state: answers - state * 100  # leaves every answer it holds
    assert float(deadline_loss(model, x, y, due, torch.Generator().manual_seed(0))) > 5


def test_a_symbol_rule_trains_on_deadlines_then_unrolls():
    """The deadline phase (one step per batch) lowers the deadline loss on a fixed batch; the
    unrolled phase after it runs; a sign state is refused the deadline loss."""
    torch = pytest.importorskip("torch")
    from sead.train.data import due_batch, encode_batch, sample_lines
    from sead.train.loop import TrainConfig, build_model, deadline_loss, train

    cfg = TrainConfig(task="multiplication", steps=60, lr=1e-2, max_len=3, hidden=16, state="symbol",
                      deadline_weight=1.0, unroll_from=0.8, mine_every=30, mine_count=256, batch_size=64)
    parsed = [MUL.parse(line) for line in sample_lines("multiplication", np.random.default_rng(2), 128, max_len=3)]
    x, y, _ = encode_batch("multiplication", parsed)
    due = due_batch("multiplication", parsed, tuple(y.shape[1:]))

    def loss_of(model):
        with torch.no_grad():
            return float(deadline_loss(model, x, y, due, torch.Generator().manual_seed(1)))

    torch.manual_seed(cfg.seed)
    before = loss_of(build_model(cfg))
    model, record = train(cfg, log=False)
    assert loss_of(model) < 0.8 * before and record["steps_done"] == 60
    with pytest.raises(ValueError, match="need state='symbol'"):
        build_model(TrainConfig(task="multiplication", deadline_weight=1.0))
    with pytest.raises(ValueError, match="needs state='symbol'"):
        build_model(TrainConfig(task="multiplication", read_digits=10))


def test_a_model_refuses_problems_past_its_verified_size(tiny_onnx, tmp_path):
    """sead.verified_size: larger problems are invalid lines (named, nothing solved) unless the
    runtime is told to allow them; 0 (every file before format 4) is no limit."""
    import onnx

    from sead.runtime import Runtime

    proto = onnx.load(str(tiny_onnx["multiplication_symbol"]))
    props = {p.key: p.value for p in proto.metadata_props}
    onnx.helper.set_model_props(proto, {**props, "sead.verified_size": "3"})
    onnx.save(proto, str(tmp_path / "m3.onnx"))
    with Runtime(str(tmp_path / "m3.onnx"), "ort", self_test=False) as rt:
        assert len(rt.solve(["123*456", "1*999"], max_steps=4)) == 2
        with pytest.raises(InputError, match=r":2: has size 4 \(digits in the longer operand\); .* up to 3"):
            rt.submit(["12*34", "1*1000"])
        assert [e.line for e in rt.invalid(["1234*1", "5*5", "1*12345"])] == [1, 3]
    with Runtime(str(tmp_path / "m3.onnx"), "ort", self_test=False, allow_unverified_sizes=True) as rt:
        assert len(rt.solve(["1*1000"], max_steps=4)) == 1
    with Runtime(str(tiny_onnx["multiplication_symbol"]), "ort", self_test=False) as rt:
        assert rt.metadata.verified_size == 0 and len(rt.solve(["1" * 20 + "*7"], max_steps=4)) == 1


def test_a_shipped_model_claims_the_sizes_it_was_exact_at():
    pytest.importorskip("torch")
    from sead.train.evaluate import EvalRow
    from sead.export.ship import verified_size

    row = lambda length, exact, problems: EvalRow("multiplication", "random", length, problems, exact,
                                                  converged=problems, steps_mean=1.0, steps_max=1)
    assert verified_size([row(6, 8, 8), row(12, 8, 8), row(24, 8, 8)]) == 0  # a tape rule exact everywhere: no limit
    assert verified_size([row(6, 8, 8), row(12, 8, 8), row(24, 8, 8)], rank=2) == 24  # a grid rule: what was checked
    assert verified_size([row(6, 8, 8), row(12, 8, 8), row(24, 7, 8), row(48, 8, 8)]) == 12
    with pytest.raises(SystemExit, match="nothing to ship"):
        verified_size([row(6, 7, 8), row(12, 8, 8)])
