"""One-file checkpoints: weights, model config, task, format version and the training record.

Loaded with `torch.load(weights_only=True)`, so a crafted file cannot run code while loading.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch

from sead.runtime.errors import ModelFileError
from sead.runtime.files import Output
from sead.runtime.tasks import TASKS
from .model import SEAD, ModelConfig

CHECKPOINT_FORMAT = "sead-checkpoint"
CHECKPOINT_VERSION = 1


def checkpoint_bytes(model: SEAD, record: dict) -> bytes:
    """The one-file checkpoint of `model` with its training record, as torch.save writes it."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "task": model.config.task,
        "model_config": dict(vars(model.config)),
        "record": record,
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def save_checkpoint(path: str | Path, model: SEAD, record: dict) -> None:
    with Output(path, binary=True) as out:  # never a half-written checkpoint
        out.write(checkpoint_bytes(model, record))


def load_checkpoint(path: str | Path) -> tuple[SEAD, dict]:
    """-> (model in eval mode, the whole payload). Raises ModelFileError with the reason."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses pickles that would import or call anything
        raise ModelFileError(f"{path}: not a loadable sead checkpoint ({_torch_reason(exc)})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ModelFileError(f"{path}: not a sead checkpoint (no '{CHECKPOINT_FORMAT}' marker)")
    version = payload.get("format_version")
    if version != CHECKPOINT_VERSION:
        raise ModelFileError(f"{path}: checkpoint format version {version!r} is not supported "
                             f"(this sead reads version {CHECKPOINT_VERSION})")
    try:
        config = ModelConfig.from_dict(payload["model_config"])
        _check_task(config, payload.get("task"), path)
        model = SEAD(config)
        model.load_state_dict(payload["state_dict"])
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise ModelFileError(f"{path}: damaged checkpoint ({_torch_reason(exc)})") from None
    model.eval()
    return model, payload


def _check_task(config: ModelConfig, task_name, path: Path) -> None:
    """The config must name the checkpoint's task and match that task's codec, channel for channel."""
    if task_name != config.task:
        raise ModelFileError(f"{path}: the checkpoint is for task {task_name!r} but its model config names {config.task!r}")
    if config.task not in TASKS:
        raise ModelFileError(f"{path}: unknown task {config.task!r}; known tasks: {', '.join(TASKS)}")
    task = TASKS[config.task]
    for field in ("input_channels", "classes", "boundary"):
        got, want = getattr(config, field), getattr(task, field)
        if got != want:
            raise ModelFileError(f"{path}: model config {field}={got!r}, but task {task.name!r} has {want!r}")


def _torch_reason(exc: Exception) -> str:
    """torch's message on one line, without its advice to retry with weights_only=False (which
    would let the file run code)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if "weights_only" not in line and not line.startswith("Check the documentation")]
    if useful:
        return "; ".join(useful[:3])
    return "refused by the safe loader" if lines else type(exc).__name__


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
