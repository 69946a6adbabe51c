"""Checkpoints: round trip, and loading never executes code from the file."""
import os
import pickle

import pytest

torch = pytest.importorskip("torch")

from sead.runtime.errors import ModelFileError  # noqa: E402
from sead.train.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from sead.train.loop import TrainConfig, build_model  # noqa: E402


def test_round_trip_keeps_weights_config_and_record(tmp_path):
    model = build_model(TrainConfig(task="parity", hidden=8, state_channels=4))
    save_checkpoint(tmp_path / "m.pt", model, {"seed": 3, "steps_done": 7})
    loaded, payload = load_checkpoint(tmp_path / "m.pt")
    assert loaded.config == model.config
    assert payload["record"] == {"seed": 3, "steps_done": 7}
    assert payload["task"] == "parity" and payload["format_version"] == 1
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "sead-checkpoint", "format_version": 1, "x": _RunsCode(marker)}, evil)
    with pytest.raises(ModelFileError, match="not a loadable sead checkpoint"):
        load_checkpoint(evil)
    assert not marker.exists()
    # a bare pickle (not a torch zip) too
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(ModelFileError):
        load_checkpoint(raw)
    assert not marker.exists()


def test_missing_foreign_and_future_files(tmp_path):
    with pytest.raises(ModelFileError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ModelFileError, match="not a loadable"):
        load_checkpoint(tmp_path / "text.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ModelFileError, match="not a sead checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save({"format": "sead-checkpoint", "format_version": 99}, tmp_path / "future.pt")
    with pytest.raises(ModelFileError, match="format version 99"):
        load_checkpoint(tmp_path / "future.pt")
