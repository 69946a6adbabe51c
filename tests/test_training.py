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
    x, _, _ = encode_batch("rule110", [task.parse(line) for line in
                                      sample_lines("rule110", np.random.default_rng(9), 256, length=12)])

    def loss_of(model):
        with torch.no_grad():
            return float(generations_loss(model, x, cfg, None, horizon=4)[0])

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
