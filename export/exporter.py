"""`sead export`: checkpoint -> one-step ONNX file, verified against PyTorch before it is kept."""
from __future__ import annotations

from pathlib import Path

import torch

from sead import __version__
from sead.runtime.errors import ModelFileError, OutputError
from sead.runtime.files import Output, refuse_same_file
from sead.train.checkpoint import file_sha256, load_checkpoint
from .onnx_step import DEFAULT_OPSET, build_step_graph, metadata_for
from .verify import verify_export


def export_checkpoint(checkpoint: str | Path, output: str | Path | None = None,
                      opset: int = DEFAULT_OPSET, verify: bool = True) -> tuple[Path, list[dict]]:
    """Write the step to `output` (default: the checkpoint's path with .onnx) and verify it.

    Nothing is left at `output` unless verification passed; an earlier file there stays as it
    was. The checkpoint itself is never an output. -> (path, verification report).
    """
    checkpoint = Path(checkpoint)
    output = Path(output) if output else checkpoint.with_suffix(".onnx")
    refuse_same_file(str(output), {"checkpoint": str(checkpoint)})
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{output}: cannot make its folder ({exc.strerror})") from None
    with Output(output, binary=True) as out:  # made first: an unwritable output is refused before any work
        model, payload = load_checkpoint(checkpoint)
        _refuse_non_finite(model, checkpoint)
        try:
            proto = build_step_graph(model, metadata_for(model, payload, file_sha256(checkpoint), __version__), opset)
        except ValueError as exc:
            raise ModelFileError(str(exc)) from None
        data = proto.SerializeToString()
        report = verify_export(model, data) if verify else []
        out.write(data)
    return output, report


def _refuse_non_finite(model, checkpoint: Path) -> None:
    """A NaN or infinite weight makes every answer meaningless; no verification can save it."""
    bad = [name for name, t in model.state_dict().items() if not bool(torch.isfinite(t).all())]
    if bad:
        raise ModelFileError(f"{checkpoint}: weights hold NaN or infinite values ({', '.join(bad)}); nothing to export")
