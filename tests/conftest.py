import pytest


def pytest_collection_modifyitems(config, items):
    """Tests marked heavy run only when -m names them (pytest -m heavy), so the default suite stays fast."""
    if "heavy" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="heavy: run with pytest -m heavy")
    for item in items:
        if "heavy" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """Untrained checkpoints of each task (random weights: enough for format and parity tests)."""
    torch = pytest.importorskip("torch")
    from sead.train.checkpoint import save_checkpoint
    from sead.train.loop import TrainConfig, build_model

    folder = tmp_path_factory.mktemp("ckpt")
    paths = {}
    for task in ("addition", "parity", "rule110"):
        torch.manual_seed(0)
        model = build_model(TrainConfig(task=task, hidden=16, state_channels=4, readout_hidden=16))
        paths[task] = folder / f"{task}.pt"
        save_checkpoint(paths[task], model, {"max_train_cells": 16, "note": "untrained test model"})
    return paths
