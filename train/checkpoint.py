"""One-file checkpoints: weights, model config, task, format version and the training record.

Loaded with `torch.load(weights_only=True)`, so a crafted file cannot run code while loading.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from sead.runtime.errors import ModelFileError
from .model import SEAD, ModelConfig

CHECKPOINT_FORMAT = "sead-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | Path, model: SEAD, record: dict) -> None:
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "task": model.config.task,
        "model_config": dict(vars(model.config)),
        "record": record,
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
    }
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # never leave a half-written checkpoint behind


def load_checkpoint(path: str | Path) -> tuple[SEAD, dict]:
    """-> (model in eval mode, the whole payload). Raises ModelFileError with the reason."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses pickles that would import or call anything
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"{path}: not a loadable sead checkpoint ({first})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ModelFileError(f"{path}: not a sead checkpoint (no '{CHECKPOINT_FORMAT}' marker)")
    version = payload.get("format_version")
    if version != CHECKPOINT_VERSION:
        raise ModelFileError(f"{path}: checkpoint format version {version!r} is not supported "
                             f"(this sead reads version {CHECKPOINT_VERSION})")
    try:
        config = ModelConfig.from_dict(payload["model_config"])
        model = SEAD(config)
        model.load_state_dict(payload["state_dict"])
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise ModelFileError(f"{path}: damaged checkpoint ({exc})") from None
    model.eval()
    return model, payload


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
