"""Training: a short run reduces the loss, and a seed fixes the result."""
import pytest

torch = pytest.importorskip("torch")

from sead.train.loop import TrainConfig, train  # noqa: E402


def test_short_training_reduces_loss_and_learns_rule110():
    cfg = TrainConfig(task="rule110", steps=120, lr=1e-2, mine_every=60, mine_count=512, max_minutes=2)
    model, record = train(cfg, log=False)
    history = record["history"]
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert history[-1]["short_accuracy"] > history[0]["short_accuracy"]
    assert record["parameters"] == model.num_parameters() < 5000


def test_training_is_deterministic_for_a_seed():
    cfg = TrainConfig(task="parity", steps=15, hidden=8, readout_hidden=8, mine_every=10, mine_count=512, seed=3)
    a, _ = train(cfg, log=False)
    b, _ = train(cfg, log=False)
    c, _ = train(TrainConfig(**{**cfg.__dict__, "seed": 4}), log=False)
    same = all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    differ = any(not torch.equal(a.state_dict()[k], c.state_dict()[k]) for k in a.state_dict())
    assert same and differ
