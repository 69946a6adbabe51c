"""`sead export`: checkpoint -> one-step ONNX file, verified against PyTorch before it is kept."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx

from sead import __version__
from sead.runtime.errors import ModelFileError
from sead.train.checkpoint import file_sha256, load_checkpoint
from .onnx_step import DEFAULT_OPSET, build_step_graph, metadata_for
from .verify import verify_export


def export_checkpoint(checkpoint: str | Path, output: str | Path | None = None,
                      opset: int = DEFAULT_OPSET, verify: bool = True) -> tuple[Path, list[dict]]:
    """Write the step to `output` (default: the checkpoint's path with .onnx) and verify it.

    Nothing is left at `output` unless verification passed. -> (path, verification report).
    """
    checkpoint = Path(checkpoint)
    model, payload = load_checkpoint(checkpoint)
    output = Path(output) if output else checkpoint.with_suffix(".onnx")
    try:
        proto = build_step_graph(model, metadata_for(model, payload, file_sha256(checkpoint), __version__), opset)
    except ValueError as exc:
        raise ModelFileError(str(exc)) from None
    data = proto.SerializeToString()
    report = verify_export(model, data) if verify else []
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".sead-export-", suffix=".onnx", dir=output.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a model file is for everyone to read
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return output, report
