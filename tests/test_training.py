"""Training: a short run reduces the loss, and a seed fixes the result."""
import pytest

torch = pytest.importorskip("torch")

from sead.train.loop import TrainConfig, train  # noqa: E402


def test_short_training_reduces_loss_and_learns_rule110():
    import numpy as np

    from sead.runtime.tasks import get_task
    from sead.train.data import encode_batch, sample_lines
    from sead.train.loop import build_model, generations_loss

    # max_minutes is only a cap: on a loaded machine a tighter one cut the run short (and failed the test)
    cfg = TrainConfig(task="rule110", steps=300, lr=1e-2, mine_every=100, mine_count=512, max_minutes=60)
    task = get_task("rule110")
    parsed = [task.parse(line) for line in sample_lines("rule110", np.random.default_rng(9), 256, length=12)]
    x, _, _ = encode_batch("rule110", parsed)

    def loss_of(model):
        with torch.no_grad():
            return float(generations_loss(model, x, parsed, horizon=4)[0])

    torch.manual_seed(cfg.seed)
    before = loss_of(build_model(cfg))
    model, record = train(cfg, log=False)
    assert loss_of(model) < 0.6 * before
    assert record["history"][-1]["short_accuracy"] > record["history"][0]["short_accuracy"]
    assert record["parameters"] == model.num_parameters() < 5000


def test_training_is_deterministic_for_a_seed():
    cfg = TrainConfig(task="parity", steps=15, hidden=8, readout_hidden=8, mine_every=10, mine_count=512, seed=3)
    a, _ = train(cfg, log=False)
    b, _ = train(cfg, log=False)
    c, _ = train(TrainConfig(**{**cfg.__dict__, "seed": 4}), log=False)
    same = all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    differ = any(not torch.equal(a.state_dict()[k], c.state_dict()[k]) for k in a.state_dict())
    assert same and differ


def test_an_anneal_phase_continues_the_first_and_resumes_from_its_checkpoint():
    """Two phases from scratch give the same rule as the first phase alone, kept, then annealed
    (bench/seeds.py --first-phase); a checkpoint made with other settings is refused."""
    import dataclasses

    cfg = TrainConfig(task="parity", steps=30, hidden=8, readout_hidden=8, mine_every=10, mine_count=256,
                      anneal_steps=30, anneal_lr=1e-3, seed=2)
    both, record = train(cfg, log=False)
    first_cfg = dataclasses.replace(cfg, anneal_steps=0, anneal_lr=0.0)
    first = train(first_cfg, log=False)
    first_weights = {k: v.clone() for k, v in first[0].state_dict().items()}
    resumed, resumed_record = train(cfg, log=False, first_phase=first)
    assert all(torch.equal(both.state_dict()[k], resumed.state_dict()[k]) for k in both.state_dict())
    assert any(not torch.equal(both.state_dict()[k], first_weights[k]) for k in first_weights)  # it did train
    assert record["steps_done"] == resumed_record["steps_done"] == 60
    assert [h["step"] for h in record["history"]] == [10, 20, 30, 40, 50, 60]
    assert record["train_config"]["anneal_steps"] == 30
    other = train(dataclasses.replace(first_cfg, lr=1e-2), log=False)
    with pytest.raises(ValueError, match="other settings.*lr"):
        train(cfg, log=False, first_phase=other)
    with pytest.raises(ValueError, match="already been through"):
        train(cfg, log=False, first_phase=(both, record))
    with pytest.raises(ValueError, match="after 20 of 30 steps"):
        train(cfg, log=False, first_phase=(first[0], {**first[1], "steps_done": 20}))


def test_generation_targets_are_the_answers_after_each_generation():
    """Training asks a generations task for its targets after 0..horizon steps (a Task hook):
    Rule 110's are its oracle's answers for as many generations, whatever the line asked for."""
    from sead.runtime.tasks import get_task

    task = get_task("rule110")
    targets = task.generation_targets(task.parse("0001000100 5"), 7)
    assert targets.shape == (8, 10) and targets.dtype.kind == "i"
    assert ["".join(map(str, row)) for row in targets] == \
        [task.answer(task.parse(f"0001000100 {g}")) for g in range(8)]
