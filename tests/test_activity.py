"""Activity: how many cells a solve changes, measured by the reference loop and penalized in
training. Checked on hand-built rules whose dynamics can be worked out on paper."""
import pytest

torch = pytest.importorskip("torch")

from sead.runtime.tasks import get_task  # noqa: E402
from sead.train.data import due_batch, encode_batch  # noqa: E402
from sead.train.evaluate import evaluate_lines  # noqa: E402
from sead.train.loop import TrainConfig, build_model, fixed_point_loss, ramp  # noqa: E402
from sead.train.model import solve  # noqa: E402


def _rule(kind: str):
    """A one-channel parity-task rule. 'front': a cell turns +1 when it holds a 1 bit or its left
    neighbour is +1, else -1 (a front that crosses one cell per step). 'blink': each step negates
    the state (0 -> +1 -> -1 -> +1 ...)."""
    model = build_model(TrainConfig(task="parity", hidden=1, state_channels=1, readout_hidden=1))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        if kind == "front":  # hidden = relu(left state + 2 * bit is 1); pre = 2 * hidden - 1
            model.rule_in.weight[0, 3, 0] = 1.0
            model.rule_in.weight[0, 2, 1] = 2.0
            model.rule_out.weight[0, 0, 0] = 2.0
            model.rule_out.bias[0] = -1.0
        else:  # hidden = relu(1 - 2 * state); pre = 2 * hidden - 1.5
            model.rule_in.weight[0, 3, 1] = -2.0
            model.rule_in.bias[0] = 1.0
            model.rule_out.weight[0, 0, 0] = 2.0
            model.rule_out.bias[0] = -1.5
    return model.eval()


def _batch(lines):
    task = get_task("parity")
    parsed = [task.parse(line) for line in lines]
    x, y, _ = encode_batch("parity", parsed)
    return x, y, due_batch("parity", parsed, tuple(y.shape[1:]))


def test_solve_counts_changed_cells_of_a_front():
    x, _, _ = _batch(["10000", "000"])  # the second tape is padded with 2 empty cells
    _, steps, converged, act = solve(_rule("front"), x, max_steps=50, activity=True)
    # "10000": step 1 sets all 5 cells (+1 - - - -), then the front turns one cell +1 per step
    # "000": step 1 sets its 3 cells to -1 and nothing moves after; padding never counts
    assert steps.tolist() == [5, 1] and converged.all()
    assert act.cells.tolist() == [5, 3]
    assert act.changes.tolist() == [5 + 4, 3]
    assert act.max_changes.tolist() == [2, 1]


def test_eval_rows_report_activity():
    row = evaluate_lines(_rule("front"), ["10000", "1000000000"]).row("parity", "random", 5)
    assert row.steps_mean == 7.5 and row.max_changes == 2
    assert row.changed_per_step == pytest.approx((9 / 5 + 19 / 10) / 2)
    assert row.dense_per_change == pytest.approx((5 * 5 + 10 * 10) / (9 + 19))


def test_activity_hinge_is_zero_for_a_front_and_charges_changes_that_are_undone():
    x, y, due = _batch(["1000", "0100"])
    cfg = TrainConfig(task="parity", activity_weight=1.0)
    # unrolled for 4 + 1 + 2 = 7 steps: the front changes each cell at most once after step 1,
    # and keeps it with margin 1
    assert float(fixed_point_loss(_rule("front"), x, y, due, cfg, extra=2)[2].detach()) == 0.0
    # the blinker changes every cell at steps 2..7; steps 2..6 are followed by another change, so
    # each is charged relu(1 - pre * state): 2.5 from state +1 (pre -1.5), 5.5 from -1 (pre 4.5).
    # Averaged over cells, channels and the 7 steps:
    blink = _rule("blink").train()
    activity = fixed_point_loss(blink, x, y, due, cfg, extra=2)[2]
    assert float(activity) == pytest.approx((2.5 + 5.5 + 2.5 + 5.5 + 2.5) / 7)
    activity.backward()
    assert blink.rule_in.weight.grad.abs().sum() > 0  # a gradient that can remove the changes
    assert fixed_point_loss(blink, x, y, due, TrainConfig(task="parity"), extra=2)[2] == 0.0  # off: not computed


def test_activity_weight_ramps_in():
    cfg = TrainConfig(task="parity", steps=1000, activity_weight=2.0, activity_from=0.3, activity_full=0.5)
    assert [ramp(cfg, s) for s in (100, 300, 400, 500, 900)] == pytest.approx([0, 0, 1.0, 2.0, 2.0])
    assert ramp(TrainConfig(task="parity"), 900) == 0.0  # off by default


def test_activity_weight_changes_training():
    import dataclasses

    from sead.train.loop import train

    cfg = TrainConfig(task="parity", steps=6, hidden=8, readout_hidden=8, mine_every=100, mine_count=512, seed=3,
                      activity_from=0.0, activity_full=0.01)
    plain, _ = train(cfg, log=False)
    sparse, _ = train(dataclasses.replace(cfg, activity_weight=1.0), log=False)
    assert any(not torch.equal(plain.state_dict()[k], sparse.state_dict()[k]) for k in plain.state_dict())
